"""The cooperative deadline: a no-op outside a scope, raises at the stage after it passes, cancellable from another
thread, and stops a real transformers ``generate()`` after the token where it passed."""

from __future__ import annotations

import threading
import time

import pytest

from emollm.utils.deadline import Deadline, DeadlineExceeded, check_deadline, deadline, stopping_criteria


def test_outside_a_scope_nothing_happens():
    check_deadline("anything")
    assert stopping_criteria() is None


def test_the_stage_after_the_deadline_raises_and_names_itself():
    with deadline(0.05, reason="the server's limit of 0.05 s (--timeout-s)") as d:
        check_deadline("media")
        assert 0 < d.remaining() <= 0.05
        time.sleep(0.06)
        with pytest.raises(DeadlineExceeded, match=r"stopped at reasoning: the server's limit of 0.05 s .* passed"):
            check_deadline("reasoning")
    check_deadline("after the scope")  # the scope is gone
    with pytest.raises(ValueError, match="one of"):
        with deadline(1.0, at=time.monotonic()):
            pass


def test_cancel_from_another_thread_stops_the_work():
    scope = Deadline()  # no time limit, only the flag
    seen: list[str] = []

    def work() -> None:
        with deadline(scope=scope):
            try:
                for i in range(2000):  # bounded: 20 s at most
                    check_deadline(f"step {i}")
                    time.sleep(0.01)
                seen.append("finished")
            except DeadlineExceeded as e:
                seen.append(str(e))

    t = threading.Thread(target=work)
    t.start()
    time.sleep(0.05)
    scope.cancel("the client disconnected")
    t.join(5)
    assert not t.is_alive() and seen and seen[0].startswith("stopped at step ")
    assert seen[0].endswith(": the client disconnected")


def test_generation_stops_at_the_deadline():
    """A tiny random LLaMA generating 400 tokens stops within a few tokens of an expired deadline."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[1, 2, 3]])
    kwargs = dict(max_new_tokens=400, min_new_tokens=400, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        full = model.generate(ids, **kwargs)
        assert full.shape[1] == 403
        scope = Deadline()
        scope.cancel()  # already due: the criterion stops after the first new token
        with deadline(scope=scope):
            out = model.generate(ids, stopping_criteria=stopping_criteria(), **kwargs)
            with pytest.raises(DeadlineExceeded):
                check_deadline("reasoning")
    assert out.shape[1] <= 3 + 2
