"""Projections into the LLM input space come out at the word-embedding scale."""
import torch

from visionllm.models.llm.embedding_scale import ScaledProjection, embedding_rms


def test_embedding_rms_matches_definition_and_meta_default():
    table = torch.randn(50, 8, dtype=torch.float64) * 0.3
    assert abs(embedding_rms(table) - float((table.numpy() ** 2).mean() ** 0.5)) < 1e-6
    assert embedding_rms(torch.empty(4, 4, device="meta")) == 1.0


def test_scaled_projection_output_rms_is_the_target_whatever_the_input_scale():
    torch.manual_seed(0)
    proj = ScaledProjection(16, 32, target_rms=0.135)
    for scale in (0.01, 1.0, 100.0):
        out = proj(torch.randn(5, 7, 16) * scale)
        rms = out.pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.full_like(rms, 0.135), rtol=1e-3)


def test_scaled_projection_gradients_reach_linear_and_gain():
    proj = ScaledProjection(4, 6, target_rms=2.0).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (x,))
    proj(x).pow(3).sum().backward()
    assert proj.linear.weight.grad.abs().sum() > 0 and proj.gain.grad.abs().sum() > 0
