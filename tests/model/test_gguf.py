"""SmolLM2-135M-Instruct from its GGUF (scripts/fetch_smollm2.sh); skipped when absent."""

import os
from pathlib import Path

import pytest
import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.stages.check import SAMPLE_CONVERSATIONS, check_chat_contract, generation_stop_ids
from lmforge.stages.common import export_model, stop_ids
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import render_prompt

ROOT = Path(__file__).resolve().parents[2]
GGUF = Path(os.environ.get("LMFORGE_SMOLLM2_GGUF",
                           ROOT / "runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not GGUF.exists(), reason=f"no {GGUF} (scripts/fetch_smollm2.sh)")]
TEXT = "The year 2024 had 366 days. <|im_start|> isn't special here; 日本語も。"


@pytest.fixture(scope="module")
def smollm2():
    from lmforge.model.gguf import load_gguf
    model, tok = load_gguf(GGUF)
    return model.eval(), tok


@pytest.fixture(scope="module")
def transformers_gguf():
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    return model, tok


def test_gguf_import_matches_transformers_logits(smollm2, transformers_gguf):
    ours, tok = smollm2
    theirs, _ = transformers_gguf
    ids = torch.tensor([render_prompt(tok, [{"role": "user", "content": "What is 2 + 2?"}])])
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
    assert diff < 1e-3


def test_gguf_tokenizer_matches_transformers(smollm2, transformers_gguf):
    _, tok = smollm2
    _, their_tok = transformers_gguf
    assert tok.encode(TEXT) == their_tok(TEXT, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    chat = their_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert tok.encode(chat, allow_special=True) == render_prompt(tok, [{"role": "user", "content": "Hi"}])


def test_export_loads_in_transformers_and_passes_the_chat_contract(smollm2, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours, tok = smollm2
    export_model(ours, tok, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(TEXT)])
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() < 1e-4
    reloaded = Tokenizer.from_dir(tmp_path)
    assert reloaded.encode(TEXT) == tok.encode(TEXT)
    assert check_chat_contract(reloaded, SAMPLE_CONVERSATIONS, generation_stop_ids(tmp_path)).ok


def test_smollm2_answers_and_stops(smollm2):
    model, tok = smollm2
    prompt = render_prompt(tok, [{"role": "user", "content": "What is the capital of France?"}])
    out = generate(model, [prompt], 40, Sampling(temperature=0), stop_ids=set(stop_ids(tok)))
    assert out.stopped == [True]
    assert tok.decode(out.tokens[0], skip_special=True) == "The capital of France is Paris."
