"""GroupViT contracts: parameter counts, shapes, group tokens per stage, gradients, assignments."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cocu.config import paper_model_config, tiny_model_config
from cocu.models.factory import PAPER_PARAMETER_COUNTS, build_model, parameter_counts
from cocu.models.groupvit import GroupViT, hard_assignment
from cocu.training.batches import random_pairs
from cocu.training.losses import GroupViTLoss

TINY = tiny_model_config()


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY)


def test_paper_parameter_counts_are_the_official_ones() -> None:
    counts = parameter_counts(build_model(paper_model_config()))  # ~1 s
    assert counts == PAPER_PARAMETER_COUNTS
    assert counts["total"] == 55_726_610


def test_text_encoder_count_decomposes_as_documented() -> None:
    model = build_model(replace(TINY, text=paper_model_config().text))  # paper text tower
    layer = sum(p.numel() for p in model.text_encoder.blocks[0].parameters())
    assert layer == 789_760
    assert parameter_counts(model)["text_encoder"] == 12 * 789_760 + 49_408 * 256 + 77 * 256 + 512


def test_forward_shapes_and_unit_norm(tiny_model: torch.nn.Module) -> None:
    images, texts, prompts = random_pairs(4, 64, 32, 3)
    out = tiny_model(images, texts, prompts)
    assert out["image_features"].shape == (4, 64)
    assert out["text_features"].shape == (4, 64)
    assert out["prompt_features"].shape == (4, 3, 64)
    for key in ("image_features", "text_features", "prompt_features"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(out[key].shape[:-1]))
    assert float(out["logit_scale"].detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    assert float(out["multi_label_logit_scale"].detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    assert "prompt_features" not in tiny_model(images, texts)


def test_group_tokens_per_stage_and_token_counts() -> None:
    cfg = replace(TINY.image, img_size=32, patch_size=8, width=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                  num_group_tokens=(8, 4, 0), num_output_groups=(6, 3))
    enc = GroupViT(cfg).eval()
    assert [0 if s.group_tokens is None else s.group_tokens.shape[1] for s in enc.stages] == [8, 4, 0]
    tokens, softs, hw = enc.forward_groups(torch.randn(2, 3, 32, 32))
    assert hw == (4, 4)
    assert [tuple(s.shape) for s in softs] == [(2, 6, 16), (2, 3, 6)]  # 16 patches -> 6 -> 3 groups
    assert tokens.shape == (2, 3, 32)
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_encode_image_groups_contract(tiny_model: torch.nn.Module) -> None:
    tiny_model.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = tiny_model.encode_image_groups(images)
        text = tiny_model.encode_text(random_pairs(5, 8, 32, 0)[1])
        again = tiny_model.encode_image_groups(images)
    tiny_model.train()
    assign = out["assignment"]
    assert assign.shape == (2, 4, 8, 8)  # [B, G, H/patch, W/patch]
    torch.testing.assert_close(assign.sum(dim=1), torch.ones(2, 8, 8))
    assert (assign >= 0).all()
    assert out["group_features"].shape == (2, 4, 64)
    torch.testing.assert_close(out["group_features"].norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(2))
    assert text.shape == (5, 64)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(5))
    assert torch.equal(out["assignment"], again["assignment"])  # eval: no Gumbel noise
    assert tiny_model.scale() == pytest.approx(1 / 0.07, rel=1e-5)


def test_other_input_size_interpolates_position_embedding(tiny_model: torch.nn.Module) -> None:
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model.encode_image_groups(torch.randn(1, 3, 96, 128))
    tiny_model.train()
    assert out["assignment"].shape == (1, 4, 12, 16)


def test_prompt_pool_max_returns_the_segments_the_evaluation_projects() -> None:
    torch.manual_seed(0)
    model = build_model(replace(TINY, prompt_pool="max")).eval()  # eval: no noise, BN running stats
    images, texts, prompts = random_pairs(3, 64, 32, 2)
    out = model(images, texts, prompts)
    groups = model.encode_image_groups(images)
    assert out["group_features"].shape == (3, 4, 64)
    torch.testing.assert_close(out["group_features"], groups["group_features"])
    torch.testing.assert_close(out["image_features"], groups["image_features"])
    assert "group_features" not in model(images, texts)  # no prompts: the caption loss only
    assert "group_features" not in build_model(TINY).eval()(images, texts, prompts)  # GroupViT's mean


def test_projector_without_relu_is_affine_in_eval_mode_and_has_the_same_parameters() -> None:
    from cocu.models.heads import ProjectionHead

    torch.manual_seed(0)
    x = torch.randn(5, 4, 64)  # 5 images x 4 segment tokens
    heads = {}
    for act in ("relu", "none"):
        torch.manual_seed(1)
        heads[act] = ProjectionHead(64, replace(TINY.projector, activation=act))
        heads[act].train()(torch.randn(64, 64) * 3)  # move the BatchNorm running statistics off 0/1
        heads[act].eval()
    # no ReLU: the projected mean of the segments is the mean of the projected segments
    torch.testing.assert_close(heads["none"](x.mean(1)), heads["none"](x).mean(1))
    assert not torch.allclose(heads["relu"](x.mean(1)), heads["relu"](x).mean(1), atol=1e-3)  # GroupViT's is not
    count = {a: sum(p.numel() for p in h.parameters()) for a, h in heads.items()}
    assert count["relu"] == count["none"]
    assert TINY.projector.activation == "none" and paper_model_config().projector.activation == "relu"


def test_init_schemes_draw_the_documented_weight_scales() -> None:
    from cocu.models.layers import init_weights

    stds = {}
    for scheme in ("groupvit", "fan_in"):
        torch.manual_seed(0)
        model = build_model(replace(TINY, init=scheme))
        stds[scheme] = {"attention qkv (fan_in 64)": model.image_encoder.stages[0].blocks[0].attn.qkv.weight.std(),
                        "mlp out (fan_in 256)": model.image_encoder.stages[0].blocks[0].mlp.fc2.weight.std(),
                        "patch embed (fan_in 3x8x8)": model.image_encoder.patch_embed.weight.std(),
                        "text projector in (fan_in 64)": model.text_projector.net[0].weight.std()}
        # embeddings and group tokens keep their own init under either scheme
        assert float(model.image_encoder.pos_embed.detach().std()) == pytest.approx(0.02, rel=0.1)
    want = {"attention qkv (fan_in 64)": 64 ** -0.5, "mlp out (fan_in 256)": 256 ** -0.5,
            "patch embed (fan_in 3x8x8)": 192 ** -0.5, "text projector in (fan_in 64)": 64 ** -0.5}
    for name, std in want.items():
        # a truncated normal (at +-2 absolute) of std s has std ~0.88 s at s = 1 and ~s for s << 1
        assert float(stds["fan_in"][name]) == pytest.approx(std, rel=0.1), name
        assert float(stds["groupvit"][name]) == pytest.approx(0.02, rel=0.1), name
    assert TINY.init == "fan_in" and paper_model_config().init == "groupvit"
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_weights(torch.nn.Linear(2, 2), scheme="xavier")


def test_every_parameter_gets_a_finite_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(TINY)
    images, texts, prompts = random_pairs(6, 64, 32, 3)
    GroupViTLoss()(model(images, texts, prompts))["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    # A token-mixing MLP's output bias adds a per-token constant that the next LayerNorm removes:
    # its exact gradient is 0 (computed: rounding noise). Every other gradient must be non-zero.
    shift_only = ("mix.mlp.fc2.bias", "group_projector.1.mlp.fc2.bias")
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and not n.endswith(shift_only)]
    assert zero == []
    for stage in model.image_encoder.stages[:2]:
        assert stage.group_tokens.grad.abs().sum() > 0
    assert model.logit_scale.grad != 0 and model.multi_label_logit_scale.grad != 0


def test_text_features_ignore_trailing_padding() -> None:
    """The encoder trims padding columns after the batch's last end-of-text token; the features
    equal a full-context pass (causal attention: no kept position sees the padding)."""
    torch.manual_seed(0)
    enc = build_model(TINY).text_encoder
    tokens = random_pairs(4, 8, 32, 0, seed=3)[1]
    tokens[:, 20:] = 0  # the longest text ends before column 20
    tokens[0, 19] = 49407
    x = enc.token_embedding(tokens) + enc.positional_embedding  # full 32 columns
    for blk in enc.blocks:
        x = blk(x, causal=True)
    full = enc.ln_final(x)[torch.arange(4), tokens.argmax(-1)]
    torch.testing.assert_close(enc(tokens), full, rtol=1e-5, atol=1e-6)


def _full_context_reference(enc: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower as written in CLIP: every block over the whole padded context, the final
    LayerNorm on every token, then the end-of-text token's feature."""
    x = enc.token_embedding(tokens) + enc.positional_embedding[: tokens.shape[1]]
    for blk in enc.blocks:
        x = blk(x, causal=True)
    return enc.ln_final(x)[torch.arange(len(tokens)), tokens.argmax(-1)]


def _mixed_length_texts(n_long: int, n_short: int, seed: int = 0) -> torch.Tensor:
    """Texts like a pre-training batch: captions of 12-30 tokens, prompts of 3-8, shuffled."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.cat([torch.randint(12, 31, (n_long,), generator=g),
                         torch.randint(3, 9, (n_short,), generator=g)])
    lengths = lengths[torch.randperm(len(lengths), generator=g)]
    tokens = torch.zeros(len(lengths), 32, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        tokens[i, 0] = 49406
        tokens[i, 1 : length - 1] = torch.randint(1, 49406, (length - 2,), generator=g)
        tokens[i, length - 1] = 49407
    return tokens


def test_bucketed_text_tower_equals_full_context_pass() -> None:
    """Length buckets, one shared embedding lookup, the last block evaluated at the end-of-text
    tokens only: same features and same gradients as the plain full-context pass."""
    from cocu.models.text import length_buckets

    torch.manual_seed(0)
    enc = build_model(TINY).text_encoder
    tokens = _mixed_length_texts(10, 30)
    assert len(length_buckets(tokens.argmax(-1) + 1)) > 1  # the bucketed path is the one tested
    weights = torch.randn(len(tokens), TINY.text.width)
    grads = []
    for fn in (enc, lambda t: _full_context_reference(enc, t)):
        enc.zero_grad()
        out = fn(tokens)
        (out * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
        if fn is enc:
            features = out.detach()
        else:
            torch.testing.assert_close(features, out.detach(), rtol=1e-5, atol=1e-5)
    for name in grads[0]:
        scale = float(grads[1][name].abs().max())  # float rounding relative to the tensor's scale
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_text_tower_looks_up_the_token_embedding_once() -> None:
    """One lookup for all length buckets: each lookup's backward writes a dense [vocab, W]
    gradient (12.6 MB for the tiny model), the costliest tensor of the text tower's backward."""
    enc = build_model(TINY).text_encoder
    calls = []
    enc.token_embedding.register_forward_hook(lambda *_: calls.append(1))
    enc(_mixed_length_texts(10, 30))
    assert len(calls) == 1


def test_block_forward_at_equals_causal_block_read_at_positions() -> None:
    from cocu.models.layers import Block

    torch.manual_seed(0)
    blk = Block(64, 2)
    x = torch.randn(5, 9, 64)
    pos = torch.tensor([0, 8, 3, 5, 1])
    torch.testing.assert_close(blk.forward_at(x, pos), blk(x, causal=True)[torch.arange(5), pos],
                               rtol=1e-5, atol=1e-5)


def test_hard_assignment_is_one_hot_with_softmax_gradient() -> None:
    logits = torch.randn(2, 5, 7, requires_grad=True)
    hard = hard_assignment(logits, dim=1)
    one_hot = torch.nn.functional.one_hot(logits.argmax(1), 5).permute(0, 2, 1).float()  # [2, 5, 7]
    torch.testing.assert_close(hard.detach(), one_hot)
    (hard * torch.randn_like(hard)).sum().backward()
    assert logits.grad.abs().sum() > 0
    torch.manual_seed(0)
    noisy = hard_assignment(logits.detach(), dim=1, gumbel=True)
    assert torch.equal(noisy.sum(1), torch.ones(2, 7))


def test_same_seed_same_output() -> None:
    images, texts, _ = random_pairs(2, 64, 32, 0)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(TINY)
        torch.manual_seed(4)
        outs.append(model(images, texts)["image_features"])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.slow  # loads open_clip's BPE vocabulary (~2 s)
def test_tokenizer_matches_context_length() -> None:
    from cocu.models.text import build_tokenizer

    tokens = build_tokenizer(TINY.text)(["a photo of a cat.", "dog"])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    assert int(tokens[0].argmax()) == 7 and int(tokens.max()) == 49407  # <sot> 6 tokens <eot>


def test_a_checkpoint_exported_before_model_init_existed_still_loads(tmp_path) -> None:
    from cocu.config import to_dict
    from cocu.eval.evaluate import load_model
    from cocu.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(TINY)
    old = {k: v for k, v in to_dict(TINY).items() if k != "init"}
    save_checkpoint({"model": model.state_dict(), "model_config": old}, tmp_path / "old.pt")
    loaded, cfg = load_model(tmp_path / "old.pt", torch.device("cpu"))
    assert cfg.init == "groupvit"  # how those weights were drawn
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
