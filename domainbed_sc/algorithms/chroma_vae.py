"""Chroma-VAE (docs/METHODS.md §A.9, §B.5): a VAE whose first latent block carries the shortcut.

Stage 1 trains a VAE (``vae_nets``) and a linear classifier C on μ₁, the first
d₁ = round(z_p·dim_z) latent means, jointly with Adam on the batch mean of
    −log p(x|z) + β·KL(N(μ, σ²) ‖ N(0, I)) + λ·CE(y, C(μ₁)),   z = μ + σ·ε.
The likelihood is Bernoulli (sigmoid means, BCE summed over pixels; pixels must lie in [0, 1]) or
a unit-variance Gaussian (squared error / 2 summed over pixels, constants dropped) for data
outside [0, 1].  Until stage 2, ``predict`` is C(μ₁(x)): the intermediate records show it.

Stage 2 runs in the final epoch hook: with the encoder frozen it computes μ₂ (the other latent
means) over the training split in eval mode and fits a classifier on (μ₂, y):
  knn    k = ⌊√N⌋ nearest training means (Euclidean), majority vote;
  mlp    DomainBed's MLP (2 hidden layers of 256) trained with Adam;
  xtilde an image classifier (the ``arch`` backbone) trained on x̃₂ = D([ε₁, μ₂]), ε₁ ~ N(0, I)
         drawn afresh every batch; it predicts on D([0, μ₂(x)]), the prior mean for z₁, so that
         predictions depend on μ₂ alone and are deterministic (our choice: the paper is silent).
From then on ``predict`` uses only μ₂(x): the final record is stage 2 and evaluates the
z2-classifier, the only checkpoint model selection may pick (METHODS §P.4; the paper's z1-classifier
is "not used for prediction").  The hook also logs C's accuracy on every split and,
for 2-channel (CMNIST) images, the mean latent shift under a colour flip (channel swap) in the
z₁ and z₂ blocks, and writes a PNG of partial reconstructions x̃₁ = D([μ₁, ε₂]), x̃₂ = D([ε₁, μ₂]).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import atomic_write_bytes
from ..datasets.base import Batch, Split
from ..errors import UserError
from ..hparams import HParam, between, choice, log_uniform, non_negative, one_of, positive
from ..networks import mlp_head
from . import register_algorithm
from .base import Algorithm, TaskInfo
from .vae_nets import Decoder, Encoder

STAGE2_KINDS = ("knn", "mlp", "xtilde")
RECONSTRUCTIONS_PNG = "chroma_partial_reconstructions.png"
N_SHOWN = 8  # training images in the reconstruction grid
N_SHIFT = 2048  # training images for the colour-flip shift


def latent_split(dim_z: int, z_p: float) -> int:
    """d₁ = round(z_p·dim_z), kept within 1..dim_z−1 so that both blocks exist."""
    if dim_z < 2:
        raise UserError(f"ChromaVAE needs chroma_zdim >= 2 to split z, got {dim_z}")
    return min(max(round(z_p * dim_z), 1), dim_z - 1)


class KNNClassifier(nn.Module):
    """k = ⌊√N⌋ nearest neighbours in a bank of N points, Euclidean, majority vote.

    The logits are the vote fractions (ties go to the lower class).  Distances are computed in
    blocks of queries so that a block holds at most ``max_block`` distances.
    """

    def __init__(self, dim: int, num_classes: int, max_block: int = 2 ** 24):
        super().__init__()
        self.num_classes, self.max_block = num_classes, max_block
        self.register_buffer("bank", torch.empty(0, dim))
        self.register_buffer("labels", torch.empty(0, dtype=torch.long))

    @property
    def k(self) -> int:
        return math.isqrt(len(self.labels))

    def fit(self, bank: Tensor, labels: Tensor) -> None:
        self.bank, self.labels = bank.detach().clone(), labels.detach().long().clone()

    def forward(self, queries: Tensor) -> Tensor:
        rows = max(1, self.max_block // max(1, len(self.bank)))
        return torch.cat([self._votes(q) for q in queries.split(rows)])

    def _votes(self, queries: Tensor) -> Tensor:
        nearest = torch.cdist(queries, self.bank).topk(self.k, dim=1, largest=False).indices
        return F.one_hot(self.labels[nearest], self.num_classes).sum(1).float() / self.k

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the bank's size is known only once fitted: take the checkpoint's shapes
        for name in ("bank", "labels"):
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_algorithm("ChromaVAE")
class ChromaVAE(Algorithm):
    num_stages = 2
    HPARAMS = {
        "lr": HParam(1e-3, log_uniform(-4.5, -2.5), positive, "Adam lr of both stages (§C.23)"),
        "batch_size": HParam(128, None, positive),
        "chroma_zdim": HParam(32, choice([4, 8, 16, 32]), positive, "dim(z)"),
        "chroma_zp": HParam(0.25, choice([0.25, 0.5, 0.75]), between(0, 1),
                            "share of z in the shortcut block z1, in (0, 1)"),
        "chroma_beta": HParam(1.0, choice([0.5, 1.0]), non_negative, "KL weight"),
        "chroma_lambda": HParam(100.0, log_uniform(0, 4), non_negative, "classification weight"),
        "chroma_likelihood": HParam("bernoulli", None, one_of("bernoulli", "gaussian")),
        "chroma_stage2": HParam("knn", choice(list(STAGE2_KINDS)), one_of(*STAGE2_KINDS),
                                "the z2-classifier: knn, mlp or xtilde"),
        "chroma_stage2_epochs": HParam(10, None, positive, "epochs of the mlp / xtilde classifier"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        dim_z = hparams["chroma_zdim"]
        self.d1 = latent_split(dim_z, hparams["chroma_zp"])
        self.encoder = Encoder(task.input_shape, dim_z)
        self.decoder = Decoder(task.input_shape, dim_z)
        self.classifier = nn.Linear(self.d1, task.num_classes)  # C: sees μ₁ only
        stage1 = [*self.encoder.parameters(), *self.decoder.parameters(),
                  *self.classifier.parameters()]
        self.optimizer = self.make_optimizer(stage1)
        self.scheduler = self.make_scheduler(self.optimizer)
        self.stage2 = self._make_stage2(dim_z - self.d1)
        self.stage = 1

    def _make_stage2(self, d2: int) -> nn.Module:
        kind, k = self.hparams["chroma_stage2"], self.task.num_classes
        if kind == "knn":
            return KNNClassifier(d2, k)
        if kind == "mlp":
            return mlp_head(d2, k, width=256, depth=3, dropout=0.0)
        featurizer = self.make_featurizer()
        return nn.Sequential(featurizer, nn.Linear(featurizer.n_outputs, k))

    # -- stage 1 -------------------------------------------------------------------------
    def neg_log_likelihood(self, out: Tensor, x: Tensor) -> Tensor:
        """−log p(x|z) per example (summed over pixels), up to a constant for the Gaussian."""
        if self.hparams["chroma_likelihood"] == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            nll = 0.5 * (out - x) ** 2
        return nll.flatten(1).sum(1)

    def mean_image(self, z: Tensor) -> Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.hparams["chroma_likelihood"] == "bernoulli" else out

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        b = Batch.cat(batches)
        mu, logvar = self.encoder(b.x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.neg_log_likelihood(self.decoder(z), b.x).mean()
        kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1).mean()
        ce = F.cross_entropy(self.classifier(mu[:, :self.d1]), b.y)
        loss = recon + self.hparams["chroma_beta"] * kl + self.hparams["chroma_lambda"] * ce
        self.step_optimizer(loss, self.optimizer, self.scheduler)
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(), "ce": ce.detach()}

    def predict(self, x: Tensor) -> Tensor:
        mu, _ = self.encoder(x)
        if self.stage == 1:
            return self.classifier(mu[:, :self.d1])
        return self.stage2(self.stage2_input(mu[:, self.d1:], sample=False))

    # -- stage 2 -------------------------------------------------------------------------
    def stage2_input(self, mu2: Tensor, sample: bool) -> Tensor:
        """What the z2-classifier reads: μ₂, or for xtilde the image D([ε₁, μ₂])."""
        if self.hparams["chroma_stage2"] != "xtilde":
            return mu2
        eps1 = mu2.new_zeros(len(mu2), self.d1)
        if sample:
            eps1.normal_()
        with torch.no_grad():
            return self.mean_image(torch.cat([eps1, mu2], dim=1))

    def on_epoch(self, ctx) -> None:
        if not ctx.final:
            if ctx.epoch == 0 and self.hparams["chroma_likelihood"] == "bernoulli":
                check_unit_range(ctx.dataset.splits["train"])
        elif self.stage == 1:
            self.run_stage2(ctx)

    def run_stage2(self, ctx) -> None:
        """Diagnostics of stage 1, the z2-classifier's fit, the reconstruction grid."""
        train = ctx.dataset.splits["train"]
        ctx.extra["chroma_z1_acc"] = {name: (ctx.predict(self, name) == split.y.to(ctx.device))
                                      .double().mean().item()
                                      for name, split in ctx.dataset.splits.items()}
        was_training = self.training
        self.eval()
        mu = self.latent_means(train, ctx.eval_batch_size, ctx.device)
        if self.task.input_shape[0] == 2:
            ctx.extra.update(self.colour_shift(train, ctx.device))
        self.fit_stage2(mu[:, self.d1:], train.y.to(ctx.device))
        self.stage = 2
        self.save_reconstructions(train, ctx.device, ctx.out_dir / RECONSTRUCTIONS_PNG)
        self.train(was_training)

    @torch.no_grad()
    def latent_means(self, split: Split, batch_size: int, device: torch.device) -> Tensor:
        return torch.cat([self.encoder(b.x.to(device))[0] for b in split.eval_batches(batch_size)])

    def fit_stage2(self, mu2: Tensor, y: Tensor) -> None:
        if self.hparams["chroma_stage2"] == "knn":
            self.stage2.fit(mu2, y)
            return
        optimizer = self.make_optimizer(self.stage2.parameters())
        self.stage2.train()
        for _ in range(self.hparams["chroma_stage2_epochs"]):
            for idx in torch.randperm(len(y), device=y.device).split(self.hparams["batch_size"]):
                loss = F.cross_entropy(self.stage2(self.stage2_input(mu2[idx], sample=True)), y[idx])
                self.step_optimizer(loss, optimizer)

    @torch.no_grad()
    def colour_shift(self, split: Split, device: torch.device) -> dict[str, float]:
        """mean_x |μ(x) − μ(x')| over the z₁ and z₂ dimensions, x' = x with its channels swapped."""
        x = split.fetch(torch.arange(min(N_SHIFT, len(split)))).x.to(device)
        shift = (self.encoder(x)[0] - self.encoder(x.flip(1))[0]).abs().mean(0)
        return {"chroma_colour_shift_z1": shift[:self.d1].mean().item(),
                "chroma_colour_shift_z2": shift[self.d1:].mean().item()}

    @torch.no_grad()
    def save_reconstructions(self, split: Split, device: torch.device, path: Path) -> None:
        """Rows: training images, x̃₁ = D([μ₁, ε₂]), x̃₂ = D([ε₁, μ₂]) (ε from a fixed seed)."""
        x = split.fetch(torch.arange(min(N_SHOWN, len(split)))).x.to(device)
        mu = self.encoder(x)[0]
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)).to(device)
        keep_z1 = torch.cat([mu[:, :self.d1], eps[:, self.d1:]], dim=1)
        keep_z2 = torch.cat([eps[:, :self.d1], mu[:, self.d1:]], dim=1)
        rows = [x, self.mean_image(keep_z1), self.mean_image(keep_z2)]
        grid = torch.cat([as_rgb(r) for r in rows]).cpu()
        # lazy: every run imports this module, and torchvision costs ~1 s of start-up
        from torchvision.utils import save_image

        atomic_write_bytes(path, lambda f: save_image(grid, f, nrow=len(x), format="png"))

    def extra_state(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.stage = state["stage"]


def as_rgb(x: Tensor) -> Tensor:
    """Images for a PNG: 2-channel (red, green) CMNIST gets a zero blue channel."""
    if x.shape[1] == 2:
        return torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    return x[:, :3]


def check_unit_range(split: Split) -> None:
    x = split.fetch(torch.arange(min(1024, len(split)))).x
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise UserError("ChromaVAE's Bernoulli likelihood needs pixels in [0, 1]; this dataset's "
                        "are not (use chroma_likelihood=gaussian)")
