import pytest
import torch

from lmforge.infer.chat import ChatSession, run_repl
from lmforge.infer.engine import Sampling
from lmforge.model.peft import PromptTuned, PromptTuningConfig, apply_peft
from lmforge.model.transformer import Transformer
from lmforge.tokenizer.chat import render_prompt
from tests.conftest import tiny_config


class FakeTok:
    """Just enough tokenizer for a session: one id per character, our template."""
    chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}<|im_sep|>{{ m['content'] }}"
                     "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant"
                     "<|im_sep|>{% endif %}")
    config = {}
    specials = {"<|im_start|>": 1, "<|im_sep|>": 2, "<|im_end|>": 3}
    eos_id, bos_id, pad_id = 3, None, 0

    def encode(self, text, allow_special=False):
        ids = []
        while text:
            hit = next((s for s in self.specials if allow_special and text.startswith(s)), None)
            ids.append(self.specials[hit] if hit else 10 + ord(text[0]) % 100)
            text = text[len(hit):] if hit else text[1:]
        return ids

    def decode(self, ids, skip_special=False):
        return "".join("" if i < 10 else chr(ord("a") + i % 26) for i in ids)

    def token_to_id(self, token):
        return self.specials.get(token)

    def stream_decoder(self, skip_special=False):
        from lmforge.tokenizer import StreamDecoder
        return StreamDecoder(lambda ids: self.decode(ids, skip_special))


def make_session(model=None, **kwargs):
    torch.manual_seed(0)
    model = model or Transformer(tiny_config())
    return ChatSession(model, FakeTok(), sampling=Sampling(temperature=0), max_new_tokens=5, **kwargs)


def test_session_keeps_history_system_prompt_and_resets():
    session = make_session(system="Be brief.")
    streamed = []
    reply = session.send("hi", on_text=streamed.append)
    assert "".join(streamed) == reply
    assert [m["role"] for m in session.messages()] == ["system", "user", "assistant"]
    session.send("again")
    assert len(session.history) == 4
    prompt = render_prompt(session.tok, session.messages())
    assert prompt.count(1) == 6  # system, 2 user and 2 assistant turns, generation header
    session.reset()
    assert session.history == [] and session.messages()[0]["role"] == "system"


def test_repl_commands():
    session = make_session()
    lines = iter(["hello", "/system Talk like a pirate.", "/reset", "hi", "/quit"])
    out = []
    run_repl(session, read=lambda _: next(lines), write=out.append)
    text = "".join(out)
    assert "(system prompt set" in text and "(history cleared)" in text
    assert session.system == "Talk like a pirate." and len(session.history) == 2


def test_prompt_tuned_model_chats_through_the_kv_cache(monkeypatch):
    torch.manual_seed(0)
    base = Transformer(tiny_config(initializer_range=0.2, tie_word_embeddings=False))
    model = apply_peft(base, "prompt", prompt=PromptTuningConfig(2))
    with torch.no_grad():
        model.prompt_embeddings.normal_()
    session = make_session(model)
    prompt = render_prompt(session.tok, [{"role": "user", "content": "hi"}])
    tokens = _greedy_no_cache(model, prompt, 5)
    end = next((i for i, t in enumerate(tokens) if t in session.stop), len(tokens))
    # The full forward (PromptTuned.forward) must not run: the engine decodes with the cache.
    monkeypatch.setattr(PromptTuned, "forward", lambda *a, **k: pytest.fail("no-cache forward"))
    assert session.send("hi") == session.tok.decode(tokens[:end], skip_special=True)


def _greedy_no_cache(model, prompt: list[int], steps: int) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_session_runs_the_tools_a_reply_calls_and_feeds_results_back(chat_model_dir, monkeypatch):
    import lmforge.infer.chat as chat_module
    from lmforge.infer.engine import Generation
    from lmforge.model.load import load_pretrained

    model, tok = load_pretrained(chat_model_dir)
    call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "6 * 7"}}<|/tool_call|>'
    prompts = []

    def scripted(model, prompts_ids, *args, **kwargs):
        prompts.append(tok.decode(prompts_ids[0]))
        text = "It is 42." if "<|tool_result|>42<|/tool_result|>" in prompts[-1] else call
        return Generation(tokens=[tok.encode(text, allow_special=True) + [tok.eos_id]], stopped=[True])

    monkeypatch.setattr(chat_module, "generate", scripted)
    session = ChatSession(model, tok, tools=["calculator"])
    shown = []
    assert session.send("What is 6 * 7?", on_text=shown.append) == "It is 42."
    assert [m["role"] for m in session.history] == ["user", "assistant", "tool", "assistant"]
    assert session.history[2]["content"] == "42" and '"name": "calculator"' in prompts[0]
    assert "[calculator(" in "".join(shown)
