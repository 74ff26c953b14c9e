"""ONNX / OpenVINO export agrees with PyTorch (OpenVINO FP32 needs INFERENCE_PRECISION_HINT=f32 explicitly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloquant.errors import ModelError
from caloquant.export import export_onnx, export_openvino, read_spec
from caloquant.models import DEFAULT_SPECS


@pytest.fixture(scope="module")
def checkpoint(gan_checkpoint):
    from caloquant.models import load_generator

    return gan_checkpoint, load_generator(gan_checkpoint).module.eval()


def test_onnx_and_openvino_match_torch(checkpoint, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    path, g = checkpoint
    z = np.random.default_rng(0).standard_normal((7, 200)).astype(np.float32)  # batch != export batch
    with torch.no_grad():
        ref = g(torch.from_numpy(z)).numpy()
    onnx_path = export_onnx(path, tmp_path / "g.onnx")
    out = ort.InferenceSession(str(onnx_path)).run(None, {"latent": z})[0]
    assert np.allclose(out, ref, atol=1e-5)
    xml = export_openvino(path, tmp_path / "g.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.allclose(compiled(z)[0], ref, atol=1e-5)
    spec, meta = read_spec(xml)
    assert spec == DEFAULT_SPECS["ecal25"] and len(meta["source_sha256"]) == 64
    (tmp_path / "g.spec.json").unlink()
    assert read_spec(xml)[0] == spec  # falls back to the IR runtime info


def test_an_angle_gain_exports_in_the_graph_and_the_latent_stays_theta_and_scaled_noise(tmp_path) -> None:
    """An angle51 generator with an angle gain exports its centring and gain inside the graph: the ONNX model takes
    [E/100, theta in radians, noise] as PyTorch does, and its spec carries the gain and the noise energy (the
    noise times E/E0, built with the latent outside the graph)."""
    ort = pytest.importorskip("onnxruntime")
    from dataclasses import replace

    from caloquant.models import build_generator
    from caloquant.models.registry import CHECKPOINT_FORMAT

    spec = replace(DEFAULT_SPECS["angle51"], angle_gain=100.0, noise_energy_gev=400.0)
    torch.manual_seed(2)
    g = build_generator(spec).eval()
    torch.save({"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "generator": g.state_dict()},
               tmp_path / "a.pt")
    z = spec.latent(np.array([20.0, 300.0]), np.array([62.0, 118.0]), np.random.default_rng(0).standard_normal(
        (2, spec.noise_size)).astype(np.float32))
    with torch.no_grad():
        ref = g(torch.from_numpy(z)).numpy()
    onnx_path = export_onnx(tmp_path / "a.pt", tmp_path / "a.onnx")
    out = ort.InferenceSession(str(onnx_path)).run(None, {"latent": z})[0]
    exported = read_spec(onnx_path)[0]
    assert np.allclose(out, ref, atol=1e-5) and (exported.angle_gain, exported.noise_energy_gev) == (100.0, 400.0)


def test_export_errors(checkpoint, tmp_path) -> None:
    path, _ = checkpoint
    with pytest.raises(ModelError, match="must end in .xml"):
        export_openvino(path, tmp_path / "g.ir")
    with pytest.raises(ModelError, match="no caloquant model metadata"):
        read_spec(tmp_path / "missing.onnx")


def test_exports_stop_before_the_entry_shift_and_decoding_shifts(tmp_path) -> None:
    """A generator with an entry-point shift exports the centred shower: ONNX Runtime and OpenVINO output what the
    module computes without its shift stage, decoding with the latents moves each shower as the PyTorch stage does,
    the file says so, and a file that does not say so (an older export, shift inside) is refused in one line."""
    import json

    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    from dataclasses import replace

    from caloquant.export.files import ENTRY_SHIFT, sidecar
    from caloquant.models import build_generator
    from caloquant.models.registry import CHECKPOINT_FORMAT, centred

    spec = replace(DEFAULT_SPECS["ecal25"], entry_jitter_cells=0.5)
    torch.manual_seed(2)
    g = build_generator(spec).eval()
    path = tmp_path / "jit.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "generator": g.state_dict()}, path)
    z = (np.random.default_rng(1).standard_normal((5, 200)) * 3).astype(np.float32)
    with torch.no_grad():
        shifted = g(torch.from_numpy(z)).numpy()
        plain = centred(g)(torch.from_numpy(z)).numpy()
    assert g.entry is not None  # the copy lost the stage, the module kept it
    assert not np.allclose(plain, shifted, atol=1e-3)
    onnx_path = export_onnx(path, tmp_path / "jit.onnx")
    out = ort.InferenceSession(str(onnx_path)).run(None, {"latent": z})[0]
    assert np.allclose(out, plain, atol=5e-5)  # float roundoff of a randomly initialised network (max 3.4)
    xml = export_openvino(path, tmp_path / "jit.xml")
    out_ov = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(z)[0]
    assert np.allclose(out_ov, plain, atol=1e-4)
    # decoding the centred output with its latents gives the PyTorch module's shifted showers (float roundoff)
    assert np.allclose(spec.to_physical(plain, z), spec.to_physical(shifted), rtol=1e-5, atol=1e-12)
    assert not np.allclose(spec.to_physical(plain), spec.to_physical(shifted), rtol=1e-2)
    assert read_spec(onnx_path)[0] == spec
    meta = json.loads(sidecar(onnx_path).read_text())
    assert meta[ENTRY_SHIFT] == "decode"
    del meta[ENTRY_SHIFT]
    sidecar(onnx_path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="older caloquant with the entry-point shift inside the graph"):
        read_spec(onnx_path)


def test_padded_convolution_exports_the_same_function(checkpoint, tmp_path) -> None:
    """A convolution exported on zero-padded input channels (for runtimes whose BF16 kernel for the plain one is
    wrong: AMX) computes what the plain export does, in ONNX Runtime and OpenVINO; the file says which it padded,
    and the model in memory is left as it was."""
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    import onnx

    from caloquant.export.files import read_meta

    path, g = checkpoint
    z = np.random.default_rng(3).standard_normal((6, 200)).astype(np.float32) * 2
    with torch.no_grad():
        ref = g(torch.from_numpy(z)).numpy()
    padded = export_onnx(path, tmp_path / "pad.onnx", padded=["block1.1"])
    graph = onnx.load(str(padded)).graph
    conv_inputs = {i.name: i for i in graph.initializer}
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert conv_inputs[first_conv.input[1]].dims[1] == 16  # 8 input channels computed as 16
    assert np.allclose(ort.InferenceSession(str(padded)).run(None, {"latent": z})[0], ref, atol=1e-5)
    compiled = ov.Core().compile_model(ov.convert_model(str(padded)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.allclose(compiled(z)[0], ref, atol=1e-5)
    assert read_meta(padded)["padded_convs"] == ["block1.1"]
    assert "padded_convs" not in read_meta(export_onnx(path, tmp_path / "plain.onnx"))
    assert type(g.block1[1]) is torch.nn.Conv3d
    with pytest.raises(ValueError, match="not a plain 3-D convolution"):
        export_onnx(path, tmp_path / "bad.onnx", padded=["block1.2"])
