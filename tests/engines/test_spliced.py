"""The spliced model for vLLM, on CPU: for every registry family at tiny size, the prompt embeddings the client would
send (the export's front: processor + encoders + projectors + the LLM's embedding table) equal the ones our own
forward builds, and the exported LLM folder is the merged model (same logits from those embeddings)."""

from __future__ import annotations

import json

import pytest
import torch

from emollm.backbones import get_backbone, list_backbones
from emollm.checkpoints import export_spliced, load_model, save_checkpoint
from emollm.checkpoints.export import needs_token_ids
from emollm.engines.spliced import SplicedClient, SplicedFront, encode_prompt_embeds
from emollm.model.lora import LoraSettings, apply_lora
from emollm.model.processing import Sample
from emollm.settings import TrainableSpec
from tests.emollm.conftest import make_tiny

SPEC = TrainableSpec()


def _question(frames: int = 3, audio: bool = True, video: bool = True, name: str = "q") -> Sample:
    g = torch.Generator().manual_seed(frames)
    feats = {
        "audio": torch.randn(frames, 24, generator=g) if audio else None,
        "face": torch.randn(1, 16, generator=g),
        "video": torch.randn(frames + 2, 20, generator=g) if video else None,
    }
    content = "<video> <face> <audio> The person says: I passed! Which emotion is shown?"
    return Sample(messages=[{"role": "user", "content": content}], features=feats, name=name)


def _ours(model, processor, sample: Sample) -> torch.Tensor:
    batch = processor([sample], add_generation_prompt=True, padding_side="left")
    with torch.no_grad():
        return model.embed(batch.input_ids, batch.modality_inputs)[0]  # (L, D)


def _tiny_with_lora(backbone: str):
    torch.manual_seed(0)
    model, processor = make_tiny(backbone)
    apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), get_backbone(backbone).lora_targets)
    with torch.no_grad():  # a trained-looking adapter: merging must change the weights
        for name, p in model.language_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    for part in model.connector_modules().values():  # trained-looking projectors
        for p in part.parameters():
            p.data.add_(0.01)
    return model.eval(), processor


@pytest.mark.parametrize("backbone", list_backbones())
def test_sent_embeddings_equal_our_forward(tmp_path, backbone):
    model, processor = _tiny_with_lora(backbone)
    samples = [_question(3), _question(5, audio=False, name="no-audio"), _question(2, video=False, name="no-video")]
    ours = [_ours(model, processor, s) for s in samples]

    # the front of the model in memory: the same tensors, bit for bit
    front = SplicedFront.from_model(model, processor)
    for a, b in zip(front.prompt_embeds(samples), ours, strict=True):
        assert torch.equal(a, b)

    ckpt = save_checkpoint(
        model, processor, tmp_path / "ckpt", lora=LoraSettings(r=4, alpha=8, dropout=0.0), trainable=TrainableSpec()
    )
    why = needs_token_ids(model.language_model.config)
    if why:  # Gemma-4: its layers read per-layer embeddings of the token ids, which prompt embeddings do not carry
        with pytest.raises(ValueError, match="cannot be served from prompt embeddings"):
            export_spliced(ckpt, tmp_path / "vllm")
        return
    out = export_spliced(ckpt, tmp_path / "vllm")
    meta = json.loads((out / "spliced.json").read_text())
    assert meta["backbone"] == backbone and (out / "llm" / "config.json").is_file()
    assert sorted(meta["placeholder_token_ids"].values()) == sorted(processor.placeholder_ids.values())

    # the front of the export (embedding table read alone from llm/): the embeddings we would send
    loaded = SplicedFront.load(out)
    sent = loaded.prompt_embeds(samples)
    for a, b in zip(sent, ours, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)

    # the exported LLM is the merged model: on the sent embeddings it gives our model's logits
    merged, merged_proc = load_model(out / "front", dtype=torch.float32)  # the tiny model is fp32
    for s, e in zip(samples, sent, strict=True):
        assert torch.equal(_ours(merged, merged_proc, s), e)
        batch = processor([s], add_generation_prompt=True, padding_side="left")
        with torch.no_grad():
            want = model(batch.input_ids, batch.attention_mask, modality_inputs=batch.modality_inputs).logits[0]
            got = merged.language_model(inputs_embeds=e[None], attention_mask=batch.attention_mask).logits[0]
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_wire_format_and_refusals(tmp_path):
    import base64
    import io

    model, processor = _tiny_with_lora("smollm2")
    ckpt = save_checkpoint(
        model, processor, tmp_path / "ckpt", lora=LoraSettings(r=4, alpha=8), trainable=TrainableSpec()
    )
    out = export_spliced(ckpt, tmp_path / "vllm")
    e = SplicedFront.load(out).prompt_embeds([_question()])[0]
    back = torch.load(io.BytesIO(base64.b64decode(encode_prompt_embeds(e))), weights_only=True)
    assert torch.equal(back, e)  # what vLLM decodes is what we built
    with pytest.raises(FileExistsError, match="already holds a spliced export"):
        export_spliced(ckpt, out)
    assert export_spliced(ckpt, out, overwrite=True) == out
    with pytest.raises(FileExistsError, match="destroy it|is inside the input|contains the input"):
        export_spliced(ckpt, ckpt / "inside")
    with pytest.raises(FileNotFoundError, match="emollm export CKPT OUT --vllm"):
        SplicedFront.load(tmp_path)


def test_http_client_sends_prompt_embeds(tmp_path):
    """The completions request the client sends, against the loopback fake (it answers a fixed text)."""
    from .fake_openai import FakeOpenAI

    model, processor = _tiny_with_lora("smollm2")
    front = SplicedFront.from_model(model, processor)
    with FakeOpenAI() as server:
        client = SplicedClient(front, endpoint=server.url, model="emollm", max_new_tokens=16, retries=0, timeout=5)
        server.default = "ok"
        with pytest.raises(Exception, match="unexpected answer"):  # the fake speaks chat, not completions
            client.generate([_question()])
        body = server.requests[-1]["body"]
    assert server.requests[-1]["path"] == "/v1/completions"
    assert body["temperature"] == 0 and body["max_tokens"] == 16
    assert body["stop_token_ids"] == processor.stop_token_ids()
    assert set(body["logit_bias"]) == {str(i) for i in processor.placeholder_ids.values()}
    import base64
    import io

    sent = torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"])), weights_only=True)
    assert torch.equal(sent, _ours(model, processor, _question()))


@pytest.mark.gpu
def test_vllm_round_trip_from_prompt_embeds(tmp_path):
    """On a GPU with vLLM: the exported model generates from the sent embeddings what our own generate does."""
    pytest.importorskip("vllm")
    model, processor = _tiny_with_lora("smollm2")
    ckpt = save_checkpoint(
        model, processor, tmp_path / "ckpt", lora=LoraSettings(r=4, alpha=8), trainable=TrainableSpec()
    )
    out = export_spliced(ckpt, tmp_path / "vllm")
    samples = [_question(3), _question(4, audio=False, name="b")]
    client = SplicedClient(out, max_new_tokens=8, llm_kwargs={"dtype": "float32", "enforce_eager": True})
    got = client.generate(samples)
    merged, mproc = load_model(out / "front", dtype=torch.float32)
    for s, c in zip(samples, got, strict=True):
        batch = mproc([s], add_generation_prompt=True, padding_side="left")
        ids = merged.generate(
            batch.input_ids, batch.attention_mask, batch.modality_inputs, max_new_tokens=8, do_sample=False,
            eos_token_id=mproc.stop_token_ids(), pad_token_id=mproc.tokenizer.pad_token_id,
        )[0].tolist()  # fmt: skip
        stop = set(mproc.stop_token_ids())
        ids = ids[: next((i for i, t in enumerate(ids) if t in stop), len(ids))]
        assert c.produced_by["tokens"][: len(ids)] == ids
