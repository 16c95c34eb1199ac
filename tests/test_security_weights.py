"""A crafted file in the weights folder never reaches pyiqa (issue 19): every weight file a metric
would read is proven safe (bench.metrics.verify) before pyiqa opens it, else one line naming it."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.errors import WeightsRefused
from bench.metrics import factory, verify
from bench.metrics.table import get

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this creates the marker file: the proof that a loader ran the file's code."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path: Path, marker: Path, fmt: str = "zip") -> Path:
    """A checkpoint whose unpickling opens ``marker`` for writing (torch zip, or a bare pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _Payload.marker = str(marker)
    obj = {"params": {"w": torch.zeros(2)}, "x": _Payload()}
    if fmt == "zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    assert not marker.exists()
    return path


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty TORCH_HOME / HF_HOME for this test; the verdict memo in a private IQA_STUDY_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "wd"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "wd" / "huggingface"))
    monkeypatch.setenv("IQA_STUDY_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(verify, "_MEMO", {})
    return tmp_path / "wd"


def _hf_entry(wd: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (snapshot links into blobs)."""
    entry = wd / "huggingface" / "hub" / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (entry / "blobs").mkdir()
    for name, data in files.items():
        blob = entry / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return snap


CASES = [  # metric, path under the weights dir (from metrics.yaml, checked against pyiqa), pickle format
    ("musiq", "hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth", "zip"),
    ("brisque", "hub/pyiqa/brisque_svm_weights.pth", "pickle"),
    ("arniqa", "hub/checkpoints/ARNIQA.pth", "zip"),
    ("clipiqa", "hub/clip/RN50.pt", "pickle"),
]


@pytest.mark.parametrize(("metric", "rel", "fmt"), CASES)
def test_crafted_file_in_each_torch_cache_is_refused_before_pyiqa(caches, tmp_path, metric, rel, fmt):
    marker = tmp_path / "marker"
    path = _crafted(caches / rel, marker, fmt)
    with pytest.raises(WeightsRefused) as err:
        factory.create(get(metric), "cpu", cache=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_crafted_bin_in_the_hf_cache_is_refused(caches, tmp_path):
    marker = tmp_path / "marker"
    evil = _crafted(tmp_path / "evil.bin", marker)
    snap = _hf_entry(caches, "timm/resnet50.a1_in1k", {"config.json": b"{}", "pytorch_model.bin": evil.read_bytes()})
    with pytest.raises(WeightsRefused, match="pytorch_model.bin: does not load as plain tensors") as err:
        factory.create(get("hyperiqa"), "cpu", cache=False)
    assert str(snap / "pytorch_model.bin") in str(err.value)
    assert not marker.exists()


def test_remote_code_and_escaping_links_in_the_hf_cache_are_refused(caches, tmp_path):
    snap = _hf_entry(caches, "q-future/one-align", {"config.json": b"{}", "modeling_x.py": b"open('m', 'w')\n"})
    with pytest.raises(WeightsRefused, match=r"modeling_x.py: is code"):
        verify.verify_spec(get("qalign"))
    (snap / "modeling_x.py").unlink()
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    (snap / "model.safetensors").symlink_to(outside)
    with pytest.raises(WeightsRefused, match="links outside its cache entry"):
        verify.verify_spec(get("qalign"))


def test_plain_weights_pass_and_a_name_hash_mismatch_or_torchscript_does_not(caches, tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "plain.pth"
    torch.save({"params": {"w": torch.arange(4.0)}, "meta": {"epoch": 3, "name": "x"}}, good)
    named = good.with_name(f"plain-{hashlib.sha256(good.read_bytes()).hexdigest()[:8]}.pth")
    good.rename(named)
    assert verify.verify_file(named) == "tensors"
    wrong = named.with_name("plain-deadbeef.pth")
    named.rename(wrong)
    with pytest.raises(WeightsRefused, match="does not start with the deadbeef its name carries"):
        verify.verify_file(wrong)
    # a crafted pickle whose name carries its own (correct) hash prefix is still refused
    marker = tmp_path / "marker"
    evil = _crafted(tmp_path / "evil.pth", marker)
    evil = evil.rename(evil.with_name(f"evil-{hashlib.sha256(evil.read_bytes()).hexdigest()[:8]}.pth"))
    with pytest.raises(WeightsRefused, match="holds pickled objects beyond tensors"):
        verify.verify_file(evil)
    assert not marker.exists()
    jit = tmp_path / "RN50.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), jit)
    with pytest.raises(WeightsRefused, match=r"TorchScript archive \(code\) whose sha256 .* \(expected afeb0e10f9e5a86d"):
        verify.verify_file(jit, "clip")
    st = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3)}, st)
    assert verify.verify_file(st, "hf") == "safetensors"
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)
    with pytest.raises(WeightsRefused, match="is not a regular file"):
        verify.verify_file(fifo)


def test_verdicts_are_memoised_outside_the_weights_dir_and_redone_after_a_rewrite(caches, tmp_path, monkeypatch):
    path = caches / "hub" / "pyiqa" / "brisque_svm_weights.pth"
    path.parent.mkdir(parents=True)
    torch.save((torch.ones(2), torch.ones(2, 3)), path)
    verify.verify_spec(get("brisque"))
    memo = tmp_path / "home" / verify.MEMO_NAME
    assert memo.is_file() and str(path.resolve()) in memo.read_text()
    assert not list(caches.rglob(verify.MEMO_NAME))
    calls = []
    real = verify._check_content
    monkeypatch.setattr(verify, "_check_content", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(verify, "_MEMO", {})  # a new process: the memo file answers
    verify.verify_spec(get("brisque"))
    assert calls == []
    marker = tmp_path / "marker"
    st = path.stat()
    _crafted(path, marker, "pickle")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: the ctime still differs
    with pytest.raises(WeightsRefused):
        verify.verify_spec(get("brisque"))
    assert len(calls) == 1 and not marker.exists()


def _cli(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "IQA_STUDY_HOME": str(env_home), "IQA_STUDY_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=300)


def test_score_and_weights_fetch_with_a_crafted_weights_dir_run_nothing(tmp_path):
    """The issue's reproduction: pyiqa would torch.load(weights_only=False) this exact file for musiq."""
    from PIL import Image

    wd, marker = tmp_path / "WD", tmp_path / "marker"
    path = _crafted(wd / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth", marker)
    Image.new("RGB", (64, 64), (120, 30, 200)).save(tmp_path / "x.png")
    done = _cli("--weights-dir", str(wd), "score", "--images", str(tmp_path / "x.png"), "--metrics", "musiq",
                "--store", str(tmp_path / "S"), "--allow-missing", env_home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    refused = [ln for ln in done.stdout.splitlines() if "refused" in ln]
    assert len(refused) == 1 and str(path) in refused[0], done.stdout
    assert not marker.exists()
    done = _cli("--weights-dir", str(wd), "weights", "fetch", "musiq", env_home=tmp_path / "home")
    assert done.returncode == 2
    assert str(path) in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not marker.exists()


def test_crafted_vgg19_for_the_perceptual_loss_is_refused(caches, tmp_path):
    """torchvision's ImageNet VGG19 (loss.perceptual_weights: imagenet) reads hub/checkpoints with weights_only=False."""
    from sr_training.losses import VGG19_FILE, _vgg19_features

    marker = tmp_path / "marker"
    path = _crafted(caches / "hub" / "checkpoints" / VGG19_FILE, marker)
    with pytest.raises(WeightsRefused) as err:
        _vgg19_features("imagenet")
    assert str(path) in str(err.value) and not marker.exists()


def test_a_truncated_file_is_unreadable_not_refused_and_pyiqa_never_opens_it(caches, tmp_path):
    """A download cut in half is damaged, not crafted: the metric is unavailable ("its weights do not
    load", naming the file), not a safety refusal; pyiqa still never sees it."""
    import io

    from bench.errors import WeightsUnreadable

    path = caches / "hub" / "pyiqa" / "brisque_svm_weights.pth"
    path.parent.mkdir(parents=True)
    buf = io.BytesIO()
    torch.save({"sv": torch.zeros(3, 36)}, buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(WeightsUnreadable, match="PytorchStreamReader") as err:
        verify.verify_file(path)
    assert not isinstance(err.value, WeightsRefused) and str(path) in str(err.value)
    with pytest.raises(factory.WeightsMissing, match=r"metric 'brisque': its weights do not load \(RuntimeError: "
                                                     r"PytorchStreamReader") as err:
        factory.create(get("brisque"), "cpu", cache=False)
    assert not isinstance(err.value, WeightsRefused) and str(path) in str(err.value) and "\n" not in str(err.value)
