"""Issue 24: an output may not be an input, another output of the same run, or inside an input shard set or
folder, for every command (one rule, ``caloquant._atomic.check_outputs``). Each refusal is one line, exit 2,
before any work: every file in the folder is left byte for byte as it was, and nothing is added."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from caloquant._atomic import check_outputs, sha256_file
from caloquant.data import write_showers
from caloquant.data.shards import MANIFEST, plan
from caloquant.errors import InputError
from caloquant.simulate import simulate, simulate_to_file
from helpers import run_cli


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shower files a.h5 and b.h5, a finished shard set set/, model files and a quantize output folder."""
    folder = tmp_path_factory.mktemp("template")
    showers = simulate(20, "10:100", seed=4)
    write_showers(folder / "a.h5", showers)
    write_showers(folder / "b.h5", showers)
    out = folder / "set"
    out.mkdir()
    m = plan("simulate", 20, 3, {}, 2)
    for s in m.shards:
        simulate_to_file(out / s.file, s.n, "10:100", seed=3, first=s.start)
        s.sha256 = sha256_file(out / s.file)
    m.save(out / MANIFEST)
    for name in ("t.json", "m.pt", "m.json", "m.xml", "m.bin", "README.md", "refs/geant4_10GeV.h5", "q/recipe.json",
                 "q/model.xml", "run/v.h5", "demo/g.pt"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(name)
    return folder


@pytest.fixture
def work(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the template, as the working directory, plus a symlink and a hard link to a.h5."""
    folder = tmp_path / "w"
    shutil.copytree(template, folder)
    (folder / "a-link.h5").symlink_to(folder / "a.h5")
    os.link(folder / "a.h5", folder / "a-hard.h5")
    monkeypatch.chdir(folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file below ``folder`` (hidden ones included) with its bytes, links with their target."""
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if Path(root, d).is_symlink()]:
            p = Path(root, name)
            out[str(p.relative_to(folder))] = os.readlink(p) if p.is_symlink() else p.read_bytes()
    return out


VALIDATE = ["validate", "a.h5", "b.h5", "-q", "--no-classifier"]
SIMULATE = ["--n", "5", "--energy", "50", "-q", "--overwrite"]
GENERATE = ["generate", "--n", "5", "--energy", "50", "-q", "--overwrite"]

CASES = {
    "validate --json REFERENCE": ([*VALIDATE, "--json", "a.h5"], "output --json is also an input (REFERENCE)"),
    "validate --report CANDIDATE": ([*VALIDATE, "--report", "b.h5"], "output --report is also an input (CANDIDATE)"),
    "validate --json via a symlink": ([*VALIDATE, "--json", "a-link.h5"], "is also an input (REFERENCE)"),
    "validate --json a hard link": ([*VALIDATE, "--json", "a-hard.h5"], "is also an input (REFERENCE)"),
    "validate --json P --report P": ([*VALIDATE, "--json", "p", "--report", "p"], "two outputs, --json and --report"),
    "validate --report inside a candidate set": (["validate", "a.h5", "set", "-q", "--report", "set/r.html"],
                                                 "is inside set, an input folder or shard set (CANDIDATE)"),
    "calibrate --table P -o P": (["calibrate", "-o", "p", "--table", "p"], "two outputs, -o and --table"),
    "calibrate -o REFERENCE": (["calibrate", "--reference", "a.h5", "--reference", "b.h5", "-o", "b.h5",
                                "--overwrite"], "also an input (--reference)"),
    "calibrate -o a kept reference": (["calibrate", "--keep-references", "refs", "-o", "refs/geant4_10GeV.h5",
                                       "--overwrite"], "also an input (--keep-references)"),
    "merge SET -o SET/merged.h5": (["merge", "set", "-o", "set/merged.h5"], "is inside set"),
    "merge SET -o a shard": (["merge", "set", "-o", "set/shard-00000.h5", "--overwrite"], "is inside set"),
    "merge SET -o its manifest": (["merge", "set", "-o", f"set/{MANIFEST}", "--overwrite"], "is inside set"),
    "merge MANIFEST -o next to it": (["merge", f"set/{MANIFEST}", "-o", "set/m.h5"], "is inside set"),
    "convert X -o X": (["convert", "a.h5", "-o", "./a.h5", "--format", "3dgan", "--overwrite"],
                       "output -o is also an input (SOURCE)"),
    "simulate -o TUNING": (["simulate", "-o", "t.json", "--tuning", "t.json", *SIMULATE], "also an input (--tuning)"),
    "simulate --cluster -o holding TUNING": (["simulate", "-o", "refs", "--tuning", "refs/geant4_10GeV.h5",
                                              "--cluster", "local", *SIMULATE], "inside the output folder -o"),
    "generate -o MODEL": ([*GENERATE, "-o", "m.pt", "--model", "m.pt"], "also an input (--model)"),
    "generate -o the weights of --precision": ([*GENERATE, "-o", "m.bin", "--model", "ecal25", "--precision", "m.xml"],
                                               "also an input (--precision)"),
    "train --out DATA": (["train", "a.h5", "--out", "a.h5", "-q"], "also an input (DATA)"),
    "train --out inside a DATA set": (["train", "set", "--out", "set/run", "-q"], "is inside set"),
    "train --out inside a DATA glob's file": (["train", "*.h5", "--out", "b.h5", "-q"], "also an input (DATA)"),
    "train --val inside --out": (["train", "a.h5", "--val", "run/v.h5", "--out", "run", "-q"],
                                 "input --val is inside the output folder --out"),
    "quantize --recipe inside -o": (["quantize", "--model", "ecal25", "--recipe", "q/recipe.json", "-o", "q",
                                     "--overwrite", "-q"], "input --recipe is inside the output folder -o"),
    "quantize -o the model's folder": (["quantize", "--model", "q/model.xml", "-o", "q", "-q"],
                                       "inside the output folder -o"),
    "bench --json P --markdown P": (["bench", "--json", "README.md", "--markdown", "README.md", "-q"],
                                    "two outputs, --json and --markdown"),
    "bench --json the weights of --tuned": (["bench", "--json", "m.bin", "--tuned", "m.xml", "-q"],
                                            "also an input (--tuned)"),
    "demo --out holding --model": (["demo", "--out", "demo", "--model", "demo/g.pt", "-q"],
                                   "inside the output folder --out"),
    "cellmap -o the model": (["cellmap", "m.pt", "--data", "a.h5", "-o", "m.pt"], "also an input (MODEL)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_that_is_an_input_is_refused(work, capsys, case) -> None:
    args, message = CASES[case]
    before = _snapshot(work)
    code, err = run_cli(capsys, *args)
    assert code == 2 and message in err, err
    assert _snapshot(work) == before  # nothing replaced, nothing half-written, no lock or temporary file left


def test_the_rule_allows_what_does_not_collide(work) -> None:
    check_outputs({"-o": "merged.h5"}, sources={"SOURCE": "set"})
    check_outputs({"-o": "set2/merged.h5"}, sources={"SOURCE": f"set/{MANIFEST}"})
    check_outputs({"--out": "run2"}, sources={"DATA": ["*.h5", "set"], "--val": None}, inputs={"--init": ""},
                  folders=["--out"])
    check_outputs({"-o": "ecal25.h5"}, inputs={"--model": "ecal25", "--precision": "int8"})  # names, not files
    check_outputs({"-o": "refs/tuning.json", "--table": "refs/table.md"}, inputs={"--keep-references": []})
    check_outputs({"--json": "r.json", "--markdown": ["README.md", "docs.md"]})


@pytest.mark.parametrize("outputs, kwargs, message", [
    ({"-o": "a.h5"}, {"sources": {"DATA": "?.h5"}}, "also an input (DATA)"),  # a glob is expanded
    ({"-o": "m.json"}, {"inputs": {"--model": "m.pt"}}, "also an input (--model)"),  # the checkpoint's card
    ({"-o": "x", "--json": "x/y.json"}, {"folders": ["-o"]}, "output --json is inside the output folder -o"),
    ({"--json": "x/y.json", "-o": "x"}, {"folders": ["-o"]}, "output --json is inside the output folder -o"),
    ({"--markdown": ["README.md", "./README.md"]}, {}, "two outputs, --markdown and --markdown"),
    ({"-o": "."}, {"sources": {"DATA": "set"}, "folders": ["-o"]}, "input DATA is inside the output folder -o"),
])
def test_check_outputs(work, outputs, kwargs, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        check_outputs(outputs, **kwargs)
