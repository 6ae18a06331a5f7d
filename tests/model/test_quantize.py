"""Weight-only int8 / int4: rounding bounds, kernel paths agree, models and QLoRA on top."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.infer.engine import Sampling, generate
from lmforge.model.load import load_pretrained
from lmforge.model.peft import LoRAConfig, apply_peft, lora_modules, save_adapter
from lmforge.model.quantize import PACKED_MAX_ROWS, QuantizedLinear, quantize, weight_bytes
from lmforge.model.transformer import Transformer
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
GGUF = Path(os.environ.get("LMFORGE_SMOLLM2_GGUF",
                           ROOT / "runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def weight(out=96, inp=128, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))


def test_int8_rounds_each_weight_to_within_half_a_step():
    w = weight()
    layer = QuantizedLinear.from_float(w, bits=8)
    step = w.abs().amax(1, keepdim=True) / 127
    err = (layer.dequantize() - w).abs()
    assert (err <= step / 2 + 1e-6).all()
    assert layer.qweight.dtype == torch.int8 and layer.qweight.shape == w.shape


def test_int4_rounds_within_half_a_step_and_keeps_values_on_its_grid():
    w = weight()
    layer = QuantizedLinear.from_float(w, bits=4, group_size=32)
    groups = w.view(96, 4, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    err = (layer.dequantize() - w).view(96, 4, 32).abs()
    assert (err <= step[..., None] / 2 + 1e-5).all()
    assert layer.qweight.dtype == torch.uint8 and layer.qweight.shape == (96, 64)  # 2 per byte
    # Values already on a group's 16-level grid come back exactly (GGUF Q4 blocks are).
    again = QuantizedLinear.from_float(layer.dequantize(), bits=4, group_size=32)
    assert torch.allclose(again.dequantize(), layer.dequantize(), atol=1e-5)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows", [1, 3, "max", "max+5"])
def test_packed_kernels_and_float_path_agree(bits, rows):
    """Up to PACKED_MAX_ROWS rows go through the packed kernels with bf16 activations (8
    significant bits, as llama.cpp rounds its activations to 8 bits): within 1% of the float
    product; more rows take the exact dequantize + float GEMM path."""
    if isinstance(rows, str):  # at and just past the packed kernels' limit for these bits
        rows = PACKED_MAX_ROWS[bits] + (5 if rows == "max+5" else 0)
    w, bias = weight(), torch.randn(96)
    layer = QuantizedLinear.from_float(w, bias, bits=bits)
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(1))
    expected = F.linear(x, layer.dequantize(), bias)
    with torch.no_grad():
        got, got_3d = layer(x), layer(x.view(1, rows, 128))[0]
    assert got.dtype == torch.float32
    tolerance = 1e-2 if rows <= PACKED_MAX_ROWS[bits] else 1e-6
    assert (got - expected).norm() / expected.norm() < tolerance
    assert torch.equal(got, got_3d)


@pytest.mark.parametrize("bits", [8, 4])
def test_gradient_reaches_the_input_not_the_frozen_weight(bits):
    layer = QuantizedLinear.from_float(weight(), bits=bits)
    x = torch.randn(5, 128, requires_grad=True)
    layer(x).square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    F.linear(x_ref, layer.dequantize()).square().sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in layer.parameters())


@pytest.mark.parametrize("scheme,tolerance", [("int8", 0.02), ("int4", 0.25)])
def test_quantized_model_logits_stay_close_and_decoding_is_consistent(scheme, tolerance):
    torch.manual_seed(0)
    model = Transformer(tiny_config(hidden_size=64, head_dim=16, intermediate_size=128)).eval()
    ids = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        reference = model(ids)
    before = weight_bytes(model)
    quantize(model, scheme)
    with torch.no_grad():
        logits = model(ids)
    rel = (logits - reference).norm() / reference.norm()
    assert rel < tolerance
    assert weight_bytes(model) < before
    assert model.quantization["scheme"] == scheme and model.quantization["head"] == "int8"
    # The engine (packed kernels per step) decodes what full forward passes (float path) pick.
    prompt = ids[:1, :8].tolist()
    fast = generate(model, prompt, 12, Sampling(temperature=0)).tokens[0]
    seq = list(prompt[0])
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert fast == seq[8:]


def test_unknown_scheme_is_refused(tiny_model):
    with pytest.raises(ValueError, match="int8 | int4"):
        quantize(tiny_model, "int3")


def test_qlora_trains_the_adapter_on_an_int4_base_and_saves_it_as_peft_does(tmp_path):
    torch.manual_seed(0)
    model = Transformer(tiny_config(hidden_size=64, head_dim=16, intermediate_size=128))
    float_model = Transformer(model.config)
    float_model.load_state_dict(model.state_dict())
    model = apply_peft(quantize(model, "int4"), "lora", lora=LoRAConfig(r=4))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(any(k in n for k in ("lora_A", "lora_B"))
                             for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    losses = []
    for _ in range(15):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    save_adapter(model, tmp_path, "base")
    names = set(__import__("safetensors.torch").torch.load_file(tmp_path / "adapter_model.safetensors"))
    assert names and all(n.startswith("base_model.model.model.layers.") for n in names)
    # The same adapter on the float base gives nearly the same model (base rounding only).
    float_lora = apply_peft(float_model, "lora", lora=LoRAConfig(r=4))
    from lmforge.model.peft import load_adapter_weights
    load_adapter_weights(float_lora, tmp_path)
    with torch.no_grad():
        a, b = model(ids), float_lora(ids)
    assert (a - b).norm() / b.norm() < 0.25
    with pytest.raises(ValueError, match="quantized base"):
        lora_modules(model)[0].merge()


def test_load_pretrained_quantizes_a_model_directory(chat_model_dir):
    model, _ = load_pretrained(chat_model_dir, quantize="int8")
    assert isinstance(model.model.layers[0].mlp.up_proj, QuantizedLinear)
    assert isinstance(model.lm_head, QuantizedLinear)  # the tied head gets its own copy
    assert model.model.embed_tokens.weight.dtype == torch.float32


def test_q4_blocks_read_as_ggml_lays_them_out():
    gguf = pytest.importorskip("gguf")
    from lmforge.model.gguf import q4_blocks

    w = weight(8, 64).numpy()
    for kind in (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1):
        raw = gguf.quants.quantize(w, kind)
        expected = torch.from_numpy(gguf.quants.dequantize(raw, kind).reshape(8, 64).astype(np.float32))
        q, d, m = q4_blocks(raw, kind == gguf.GGMLQuantizationType.Q4_1, 64)
        layer = QuantizedLinear.from_gguf_q4(q, d, m)
        assert torch.allclose(layer.dequantize(), expected, atol=1e-6)


@pytest.mark.skipif(not GGUF.exists(), reason=f"no {GGUF} (scripts/fetch_smollm2.sh)")
def test_smollm2_q4_1_file_becomes_int4_layers_exactly():
    """The file's 4-bit blocks are taken over as they are: each int4 layer dequantizes to the
    very values llama.cpp's own dequantization gives (q rows un-permuted as the float import)."""
    import gguf

    from lmforge.model.gguf import unpermute_rope_rows

    int4, tok = load_pretrained(GGUF, quantize="int4")
    tensors = {t.name: t for t in gguf.GGUFReader(str(GGUF)).tensors}
    for gguf_name, name in (("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj"),
                            ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj")):
        t = tensors[gguf_name]
        exact = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32))
        if "attn_q" in gguf_name:
            exact = unpermute_rope_rows(exact, int4.config.num_attention_heads)
        assert torch.equal(int4.get_submodule(name).dequantize(), exact)
    assert int4.get_submodule("lm_head").bits == 8  # the Q8_0 embedding's head stays 8-bit
    reply = generate(int4, [tok.encode("The capital of France is")], 4, Sampling(temperature=0))
    assert " Paris" in tok.decode(reply.tokens[0])
