"""MindSpore twin of ``denoising_diffusion_pytorch/attend.py`` (2.3.4)."""

from ms_ddpm.ms_compat import Module, Dropout, softmax, matmul_nn, matmul_nt
from mindspore import ops

# helpers

def exists(val):
    return val is not None

def default(val, d):
    return val if exists(val) else d

# main class

class Attend(Module):
    def __init__(
        self,
        dropout = 0.,
        flash = False,
        scale = None
    ):
        super().__init__()
        self.dropout = dropout
        self.scale = scale
        self.attn_dropout = Dropout(dropout)

        # flash = True is PyTorch's F.scaled_dot_product_attention: the same maths
        # (softmax(q k^T * scale) v), so both paths compute it the same way here.
        self.flash = flash

    def construct(self, q, k, v):
        """
        einstein notation
        b - batch
        h - heads
        n, i, j - sequence length (base sequence length, source, target)
        d - feature dimension
        """

        if self.flash:
            # the reference's flash_attn path: q is pre-scaled by scale / d (sic), then
            # F.scaled_dot_product_attention applies its default 1 / sqrt(d)
            if exists(self.scale):
                q = q * (self.scale / q.shape[-1])
            scale = q.shape[-1] ** -0.5
        else:
            scale = default(self.scale, q.shape[-1] ** -0.5)

        # similarity

        sim = matmul_nt(q, k) * scale

        # attention

        attn = softmax(sim, dim = -1)
        attn = self.attn_dropout(attn)   # flash path: dropout_p = self.dropout if training (same)

        # aggregate values

        out = matmul_nn(attn, v)

        return out
