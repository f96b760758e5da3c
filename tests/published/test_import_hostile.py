"""``emollm import`` under hostile input: truncated, foreign, evil-pickle and wrong-backbone checkpoints.

Each case ends in one line naming the file and what is wrong or missing (never a torch traceback, never a question
like "is this a MiniGPT-v2 checkpoint?" about a file imported as one), exit 2, and nothing written at ``--out``.
Pickled code is never run. Tiny dimensions as in ``test_emotion_llama.py`` (H=64, r=4, feature width 16).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from emollm.checkpoints.published import import_checkpoint
from emollm.checkpoints.published.cli import main
from emollm.checkpoints.published.released import checkpoint_kind, read_released_state_dict
from tests.emollm.conftest import tiny_tokenizer

from .test_emotion_llama import FEAT, LAYERS, H, R, released_state


class _Evil:
    """Unpickling it would create ``marker`` (what a malicious checkpoint does with os.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _import(tmp_path: Path, ckpt: Path, capsys, source: str = "emotion-llama") -> str:
    out = tmp_path / "out"
    assert main([source, str(ckpt), "--llm-path", str(tmp_path / "llm"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists()  # nothing written
    assert "?" not in lines[0].split(str(ckpt))[-1].split("(")[0]  # it says what is wrong; it does not ask
    return lines[0]


def _png() -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


CORRUPT = {
    "text": (lambda p: p.write_text("hello world\n"), "is not a torch checkpoint (it starts with b'hello world"),
    "json": (lambda p: p.write_text('{"model": {}}'), "is not a torch checkpoint"),
    "png": (lambda p: p.write_bytes(_png()), "is not a torch checkpoint (it starts with b'\\x89PNG"),
    "empty": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "zip-not-torch": (
        lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "hi"),
        "is not a readable torch checkpoint",
    ),
    "cut-zip": (
        lambda p: (torch.save({"model": released_state()}, p), p.write_bytes(p.read_bytes()[:300])),
        "is not a readable torch checkpoint",
    ),
    "cut-legacy": (
        lambda p: (
            torch.save({"model": released_state()}, p, _use_new_zipfile_serialization=False),
            p.write_bytes(p.read_bytes()[:300]),
        ),
        "is not a readable torch checkpoint",
    ),
    "no-tensors": (lambda p: torch.save({"model": {"a": 1}, "epoch": 3}, p), "holds no tensor state dict"),
    "bare-list": (lambda p: torch.save([torch.zeros(2)], p), "holds no tensor state dict"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_damaged_and_foreign_files_are_one_line(tmp_path, capsys, case):
    make, fragment = CORRUPT[case]
    ckpt = tmp_path / "ckpt.pth"
    make(ckpt)
    line = _import(tmp_path, ckpt, capsys)
    assert line.startswith(f"emollm import emotion-llama: error: {ckpt}") and fragment in line, line


@pytest.mark.parametrize("container", ["pickle", "torch-zip", "torch-legacy"])
def test_evil_pickles_are_refused_and_never_run(tmp_path, capsys, container):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    payload = {"model": released_state(), "config": _Evil(marker)}
    if container == "pickle":
        ckpt.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, ckpt, _use_new_zipfile_serialization=container == "torch-zip")
    line = _import(tmp_path, ckpt, capsys)
    assert "weights_only=True" in line and "never runs a checkpoint's pickled code" in line
    assert not marker.exists()


def test_a_checkpoint_without_lora_says_what_is_missing(tmp_path, capsys):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, foreign)
    line = _import(tmp_path, foreign, capsys, source="minigpt-v2")
    assert "has no LoRA tensors" in line and "every released minigpt-v2 checkpoint has" in line
    assert "it holds 2 tensor(s), e.g. conv1.weight, fc.bias" in line and "is this" not in line
    no_lora = tmp_path / "no_lora.pth"
    torch.save({"model": {k: v for k, v in released_state().items() if "lora_" not in k}}, no_lora)
    line = _import(tmp_path, no_lora, capsys, source="emotion-llama")
    assert "has no LoRA tensors" in line and "every released emotion-llama checkpoint" in line


def _tiny(hidden: int = H, layers: int = LAYERS):
    from emollm.backbones import get_backbone

    tok = tiny_tokenizer("llama2")
    cfg = get_backbone("llama2").text_config(n_layers=layers, hidden=hidden, vocab_size=len(tok), n_heads=4,
                                             n_kv_heads=4)  # fmt: skip
    return {"text_config": cfg, "tokenizer": tok}


def test_a_minigpt_file_imported_as_emotion_llama_names_the_projectors_it_lacks(tmp_path):
    with pytest.raises(ValueError) as err:
        import_checkpoint(released_state(source="minigpt-v2"), tmp_path / "x", **_tiny())
    msg = str(err.value)
    assert "lacks 6 projector tensor(s)" in msg and "feats_llama_proj1.weight" in msg
    assert "emollm import minigpt-v2" in msg and "?" not in msg


@pytest.mark.parametrize(
    ("tiny", "fragment"),
    [
        ({"hidden": 32}, "does not fit the emollm parameter"),  # a base LLM of another width (wrong backbone)
        ({"layers": 1}, "the emollm model has no base_model.model.model.layers.1"),  # fewer layers than the source
    ],
    ids=["hidden-size", "layers"],
)
def test_wrong_backbone_is_named(tmp_path, tiny, fragment):
    with pytest.raises(ValueError, match=fragment):
        import_checkpoint(released_state(), tmp_path / "x", **_tiny(**tiny))
    assert not (tmp_path / "x" / "checkpoint.json").exists()


def test_a_lora_tensor_of_another_shape_is_named(tmp_path):
    sd = released_state()
    sd["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(R)
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn\.q_proj\.lora_A\.weight: shape \(4,\) is not a LoRA"):
        import_checkpoint(sd, tmp_path / "x", **_tiny())


def test_a_safetensors_copy_of_the_released_keys_reads(tmp_path):
    from safetensors.torch import save_file

    sd = released_state()
    path = tmp_path / "released.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    assert checkpoint_kind(path.read_bytes()[:16]) == "safetensors"
    back = read_released_state_dict(path)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert back["feats_llama_proj1.weight"].shape == (H, FEAT)


def test_out_onto_the_checkpoint_itself_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "released.pth"
    torch.save({"model": released_state()}, ckpt)
    before = ckpt.read_bytes()
    assert main(["emotion-llama", str(ckpt), "--llm-path", str(tmp_path), "--out", str(ckpt)]) == 2
    assert "Traceback" not in capsys.readouterr().err and ckpt.read_bytes() == before
