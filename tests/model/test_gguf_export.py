"""Our model -> GGUF (gguf_export.py), read back by load_gguf and by transformers.

transformers' GGUF loader undoes llama.cpp's q/k permutation with its own code, so equal
logits there check that we follow llama.cpp's conventions, not merely our own inverse.
"""

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lmforge.errors import InputError
from lmforge.model.gguf import load_gguf, permute_rope_rows, unpermute_rope_rows
from lmforge.model.gguf_export import export_gguf, gguf_arch, llama_cpp_pre
from lmforge.model.hub import load_model
from lmforge.model.peft import LoRAConfig, apply_peft, save_adapter
from lmforge.model.transformer import Transformer
from lmforge.stages.common import export_model
from lmforge.stages.convert import ConvertConfig, convert
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import render_prompt
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = Path(os.environ.get("LMFORGE_SMOLLM2_HF", ROOT / "runs/models/smollm2/hf"))
TEXTS = ["Call me Ishmael. Some years ago, never mind how long precisely",
         "子曰：學而時習之，不亦說乎？有朋自遠方來",
         "In 2024, 3.14159 isn't   pi;\n\n\tI'M SURE they'll say $x_1 😀",
         "<|im_start|>user<|im_sep|> stays plain text in encode()"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好，2 + 2 = ?"}]


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.tensor([ids]))


@pytest.fixture(scope="module")
def model(tok):
    """Untied, GQA, 3 filler rows beyond the tokenizer (llama.cpp writes "[PAD{i}]" there),
    wide enough that the weights, not the vocabulary, dominate the file size."""
    torch.manual_seed(0)
    return Transformer(tiny_config(vocab_size=tok.vocab_size + 3, hidden_size=256,
                                   intermediate_size=512, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=64, rope_theta=500000.0,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False)).eval()


@pytest.fixture(scope="module")
def exported(model, tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(model, tok, out / f"model-{t}.gguf", t) for t in ("f32", "f16", "q8_0")}


def test_permute_interleaves_each_heads_rotate_half_pairs():
    rows = torch.arange(8.0).unsqueeze(1)  # 2 heads of dim 4: (x0 x1 | y0 y1) per head
    assert permute_rope_rows(rows, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    w = torch.randn(6 * 16, 5)
    assert torch.equal(unpermute_rope_rows(permute_rope_rows(w, 6), 6), w)


def test_f32_round_trip_is_exact(model, tok, exported):
    back, back_tok = load_gguf(exported["f32"])
    assert replace(back.config, rms_norm_eps=1e-6) == model.config
    assert back.config.rms_norm_eps == pytest.approx(1e-6)  # GGUF stores a float32
    ids = tok.encode(TEXTS[0] + TEXTS[1])
    assert (logits(back, ids) - logits(model, ids)).abs().max().item() < 1e-5
    for text in TEXTS:
        assert back_tok.encode(text) == tok.encode(text)
        assert back_tok.decode(tok.encode(text)) == text
    assert render_prompt(back_tok, CHAT) == render_prompt(tok, CHAT)
    assert back_tok.chat_template == tok.chat_template
    assert back_tok.special_tokens == tok.special_tokens
    ids_of = lambda t: (t.bos_id, t.eos_id, t.pad_id)  # noqa: E731
    assert ids_of(back_tok) == ids_of(tok)


def test_f16_and_q8_0_stay_close_and_q8_0_is_a_quarter_of_f32(model, tok, exported):
    ids = tok.encode(TEXTS[2])
    reference = logits(model, ids)
    # Observed max |diff| on logits within ±1.3: f16 7e-4, q8_0 2e-2 (llama.cpp's own q8_0).
    for gguf_type, tolerance in (("f16", 3e-3), ("q8_0", 5e-2)):
        diff = (logits(load_gguf(exported[gguf_type])[0], ids) - reference).abs().max().item()
        assert diff < tolerance, (gguf_type, diff)
    size = {t: p.stat().st_size for t, p in exported.items()}
    # Q8_0 stores 32 weights in 34 bytes (1/3.76 of f32); norms and the vocabulary stay.
    assert 3.4 < size["f32"] / size["q8_0"] < 3.8, size
    assert 1.8 < size["f32"] / size["f16"] < 2.0, size


# The arch each feature needs; transformers' Qwen3 reads no head_dim from GGUF (128 assumed).
ARCHES = [("llama", {}), ("qwen2", {"attention_bias": True}),
          ("qwen3", {"qk_norm": True, "head_dim": 128, "hidden_size": 64,
                     "num_attention_heads": 2, "num_key_value_heads": 1})]


@pytest.mark.parametrize("arch,features", ARCHES, ids=[a for a, _ in ARCHES])
def test_transformers_reads_our_gguf(arch, features, tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=tok.vocab_size, rope_theta=500000.0,
                                    tie_word_embeddings=arch == "llama", **features))
    assert gguf_arch(model.config) == arch
    export_gguf(model, tok, tmp_path / "m.gguf", "f32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    their_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    ids = tok.encode(TEXTS[0] + TEXTS[2])
    with torch.no_grad():
        assert (logits(model, ids) - theirs(torch.tensor([ids])).logits).abs().max().item() < 1e-4
    for text in TEXTS[:3]:
        assert their_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    back, _ = load_gguf(tmp_path / "m.gguf")
    assert (logits(back, ids) - logits(model, ids)).abs().max().item() < 1e-5


def test_bias_with_qk_norm_is_refused_by_name():
    with pytest.raises(InputError, match="bias together with QK-norm"):
        gguf_arch(tiny_config(attention_bias=True, qk_norm=True))


def test_convert_merges_a_lora_adapter_into_the_gguf(tok, tmp_path):
    torch.manual_seed(0)
    base = Transformer(tiny_config(vocab_size=tok.vocab_size))
    export_model(base, tok, tmp_path / "base")
    tuned = apply_peft(base, "lora", lora=LoRAConfig(r=4))
    with torch.no_grad():  # B starts at zero: give the update something to merge
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    save_adapter(tuned, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    convert(ConvertConfig(src=str(tmp_path / "adapter"), dst=str(tmp_path / "merged.gguf"),
                          gguf_type="f32"))
    merged, _ = load_gguf(tmp_path / "merged.gguf")
    ids = tok.encode(TEXTS[1])
    assert (logits(merged, ids) - logits(tuned, ids)).abs().max().item() < 1e-5
    assert (logits(merged, ids) - logits(load_model(tmp_path / "base"), ids)).abs().max() > 1e-2


def test_convert_checks_gguf_type_before_loading(tmp_path):
    with pytest.raises(InputError, match="gguf_type 'q4_0' is not one of f32, f16, q8_0"):
        convert(ConvertConfig(src=str(tmp_path / "absent"), dst=str(tmp_path / "m.gguf"),
                              gguf_type="q4_0"))


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.exists(), reason=f"no {SMOLLM2} (scripts/fetch_smollm2.sh)")
def test_smollm2_exports_to_gguf_that_we_and_transformers_read(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours, tok = load_model(SMOLLM2), Tokenizer.from_dir(SMOLLM2)
    assert llama_cpp_pre(tok) == "smollm"
    convert(ConvertConfig(src=str(SMOLLM2), dst=str(tmp_path / "smollm2.gguf"), gguf_type="f32"))
    back, back_tok = load_gguf(tmp_path / "smollm2.gguf")
    ids = render_prompt(tok, CHAT)
    expected = logits(ours, ids)
    assert (logits(back, ids) - expected).abs().max().item() < 1e-4
    assert back_tok.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    assert back_tok.chat_template == tok.chat_template
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="smollm2.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (theirs(torch.tensor([ids])).logits - expected).abs().max().item() < 1e-3
