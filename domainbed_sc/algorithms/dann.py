"""DANN and CDANN, DomainBed's ``AbstractDANN`` (docs/METHODS.md §A.4).

No gradient-reversal layer: a discriminator D on the features φ(x) learns to predict the
environment, and updates alternate.  With t counting updates from 1, update t is a discriminator
step if ``t % (1 + d_steps_per_g_step) < d_steps_per_g_step`` and a generator step otherwise.
  discriminator: minimise L_D = CE(D(φ(x)), e) + grad_penalty · mean_i ‖∂ΣCE/∂input_i‖²
  generator:     minimise CE(h(φ(x)), y) − λ·L_D   (L_D with its penalty: a DomainBed quirk we keep)
CDANN conditions D on the class (input φ(x) + embedding(y)) and weights the discriminator loss so
every class counts equally.  The discriminator's targets are the e labels (with the uniform_env
sampler minibatch i holds environment i, DomainBed's target).  What D sees and how its CE is
weighted are the hooks ``disc_features`` / ``disc_input`` / ``disc_weights``, through which CDAN
(cdan.py, Long et al.'s multilinear conditioning) reuses these alternating steps.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn

from ..datasets.base import Batch
from ..errors import UserError
from ..hparams import HParam, at_least, choice, log_uniform, non_negative, positive, pow2_int
from ..networks import mlp_head
from . import register_algorithm
from .base import COMMON_HPARAMS, TaskInfo
from .erm import ERM

_LR = COMMON_HPARAMS["lr"]  # lr_g / lr_d share ERM's lr default and range, small and large


class AbstractDANN(ERM):
    requires = frozenset({"e"})
    conditional: ClassVar[bool]
    HPARAMS = {
        "lambda": HParam(1.0, log_uniform(-2, 2), non_negative, "weight of −L_D in the generator loss"),
        "weight_decay_d": HParam(0.0, log_uniform(-6, -2), non_negative),
        "d_steps_per_g_step": HParam(1, pow2_int(0, 3), positive),
        "grad_penalty": HParam(0.0, log_uniform(-2, 1), non_negative),
        "beta1": HParam(0.5, choice([0.0, 0.5]), non_negative, "Adam beta1 of both optimizers"),
        "mlp_width": HParam(256, pow2_int(6, 10), positive),
        "mlp_depth": HParam(3, choice([3, 4, 5]), at_least(2)),
        "mlp_dropout": HParam(0.0, choice([0.0, 0.1, 0.5]), non_negative),
        "lr_g": _LR,
        "lr_d": _LR,
        "weight_decay_g": HParam(0.0, None, non_negative, large=(0.0, log_uniform(-6, -2))),
        "sampler": dataclasses.replace(COMMON_HPARAMS["sampler"], default="uniform_env"),
    }

    def __init__(self, task: TaskInfo, hparams):
        if hparams["optimizer"] != "adam" or hparams["lr_milestones"]:
            raise UserError(f"{self.name} trains with two constant-lr Adams (lr_g, lr_d): "
                            "optimizer=sgd and lr_milestones are not supported")
        super().__init__(task, hparams)
        n, hp = self.featurizer.n_outputs, hparams
        self.discriminator = mlp_head(self.disc_features(n), task.num_envs, hp["mlp_width"],
                                      hp["mlp_depth"], hp["mlp_dropout"])
        disc_params = list(self.discriminator.parameters())
        if self.conditional:
            self.class_embeddings = nn.Embedding(task.num_classes, n)
            disc_params += list(self.class_embeddings.parameters())
        betas = (hp["beta1"], 0.9)
        # ERM.step drives the generator side through self.optimizer
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=hp["lr_g"],
                                          weight_decay=hp["weight_decay_g"], betas=betas)
        self.disc_optimizer = torch.optim.Adam(disc_params, lr=hp["lr_d"],
                                               weight_decay=hp["weight_decay_d"], betas=betas)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes with the model

    def is_disc_step(self, t: int) -> bool:
        d = self.hparams["d_steps_per_g_step"]
        return t % (1 + d) < d

    def disc_features(self, n: int) -> int:
        """Width of the discriminator's input for n-d features."""
        return n

    def disc_input(self, z: Tensor, logits: Tensor, b: Batch) -> Tensor:
        return z + self.class_embeddings(b.y) if self.conditional else z

    def disc_weights(self, logits: Tensor, b: Batch) -> Tensor | None:
        """Per-example weights (summing to 1) of the discriminator's CE; None: the plain mean."""
        if not self.conditional:
            return None
        y_counts = torch.bincount(b.y)  # every class weighs the same (DomainBed's class_balance)
        return 1.0 / (y_counts[b.y] * len(y_counts)).float()

    def disc_loss(self, z: Tensor, logits: Tensor, b: Batch) -> Tensor:
        disc_input = self.disc_input(z, logits, b)
        ce = F.cross_entropy(self.discriminator(disc_input), b.e, reduction="none")
        weights = self.disc_weights(logits, b)
        loss = ce.mean() if weights is None else (weights * ce).sum()
        input_grad = autograd.grad(ce.sum(), [disc_input], create_graph=True)[0]
        return loss + self.hparams["grad_penalty"] * input_grad.pow(2).sum(dim=1).mean()

    def losses(self, b: Batch, disc_step: bool) -> tuple[Tensor, Tensor]:
        """(the classifier's CE, L_D).  On a discriminator step the featurizer and classifier
        are constants: the graph is cut at φ(x) (the penalty still needs ∂/∂input)."""
        z = self.featurizer(b.x)
        if disc_step:
            z = z.detach().requires_grad_()
        logits = self.classifier(z)
        disc_loss = self.disc_loss(z, logits.detach() if disc_step else logits, b)
        return F.cross_entropy(logits, b.y), disc_loss

    def update(self, batches: list[Batch]) -> dict[str, Tensor | float]:
        self.update_count += 1
        disc_step = self.is_disc_step(int(self.update_count))
        class_loss, disc_loss = self.losses(Batch.cat(batches), disc_step)
        if disc_step:
            self.step_optimizer(disc_loss, self.disc_optimizer)
        else:
            self.step(class_loss - self.hparams["lambda"] * disc_loss)
        return {"loss": class_loss.detach(), "disc_loss": disc_loss.detach(), "disc_step": float(disc_step)}


@register_algorithm("DANN")
class DANN(AbstractDANN):
    conditional = False


@register_algorithm("CDANN")
class CDANN(AbstractDANN):
    conditional = True
