"""Each package's public names, pinned: an API change is a deliberate edit of this list (pyhf's test_public_api)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import caloquant

PUBLIC = {
    "caloquant": ["__version__"],
    "caloquant.bench": [],
    "caloquant.calibrate": ["CalibrationResult", "QUANTITIES", "Summary", "calibrate", "comparison_table",
        "fit_gflash", "profile_chi2", "summarise"],
    "caloquant.cli": ["app", "fail", "main"],
    "caloquant.cluster": ["GenerateJob", "ShardedResult", "SimulateJob", "connect", "run_sharded"],
    "caloquant.data": ["LAYOUTS", "Manifest", "ShowerDataset", "ShowerFile", "ShowerFiles", "ShowerSet",
        "ShowerWriter", "convert", "expand_paths", "open_showers", "read_showers", "write_showers"],
    "caloquant.export": ["PRECISION_KEY", "cache_dir", "export_onnx", "export_openvino", "exported",
        "inference_hint", "read_meta", "read_spec", "save_ir"],
    "caloquant.generate": ["GenerateResult", "Packer", "PartialShowerFile", "RequestBatcher", "Slice", "conditions",
        "generate_to_file", "pack", "partial_path"],
    "caloquant.models": ["AngleDiscriminator", "AngleGenerator", "CellMap", "DEFAULT_SPECS", "EcalEnergyDiscriminator",
        "EcalEnergyGenerator", "LoadedGenerator", "ModelSpec", "available_models", "build_discriminator",
        "build_generator", "calibrate_batchnorm", "count_parameters", "fit_cell_map", "load_generator", "model_card",
        "sample_showers", "sha256_file", "shipped_recipe", "shower_noise"],
    "caloquant.plotting": ["average_images", "cell_spectrum", "feature_histograms", "moments_vs_energy", "png_bytes",
        "profiles", "sampling_fraction_vs_energy", "tilt_response", "write_report"],
    "caloquant.quantize": ["AccuracyNotReachedError", "Calibration", "Candidate", "Criterion", "EvaluationSettings",
        "Evaluator", "Fallback", "GAN_CALIBRATION", "MAX_CALIBRATION", "PerItemEvaluator", "PhysicsEvaluator", "Recipe",
        "ResolvedModel", "TuneResult", "apply_recipe", "gan_calibration", "open_deployed", "read_recipe", "resolve",
        "shipped_int8", "tune"],
    "caloquant.runtime": ["ENGINES", "Engine", "EngineName", "Generator", "OnnxRuntimeEngine", "OpenVINOEngine",
        "PRECISIONS", "Precision", "Throughput", "TorchEngine", "cache_dir", "describe", "measure_throughput",
        "median_seconds", "open_generator", "peak_rss_mib"],
    "caloquant.simulate": ["AngleRange", "GFlashTuning", "ShowerSimulator", "Spectrum", "load_tuning", "parse_range",
        "simulate", "simulate_to_file"],
    "caloquant.train": ["MapFit", "TrainConfig", "TrainResult", "Trainer", "fit_generator_map", "train",
        "write_mapped_generator"],
    "caloquant.validate": ["AngleBins", "CandidateResult", "ClassifierResult", "Comparison", "EnergyBins", "METRICS",
        "MetricOptions", "MetricResult", "PairedResult", "ShowerFeatures", "TILT_METRIC", "ValidationResult",
        "as_features", "chi2_ndf", "classifier_auc", "compare", "compute_features", "fpd", "frechet_at_size",
        "frechet_distance", "kpd", "mmd2_unbiased", "moments_metric", "paired_difference", "profiles_metric",
        "resolve_bins", "sampling_fraction_mre", "separation_power", "tilt_metric", "validate"],
}


def test_every_package_is_pinned() -> None:
    found = {"caloquant"} | {f"caloquant.{m.name}" for m in pkgutil.iter_modules(caloquant.__path__) if m.ispkg}
    assert found == set(PUBLIC)


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == PUBLIC[package]
    assert all(hasattr(module, name) for name in module.__all__)
