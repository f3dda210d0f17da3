"""eX2L, eXplaining to Learn (reconstructed; docs/METHODS.md §A.7, §C.13, §C.18–§C.20).

Two models that share no weights: the label model f (featurizer + head over the K classes) and
the confounder model g (its own featurizer + head over the confounder values c = s).  Each has
its own optimizer (SGD, momentum 0.9 by default), learning rate and weight decay.  Grad-CAM reads
both at the end of the featurizer body (mnist_cnn: the 14×14 conv4 map on 28×28 input; ResNets:
the layer4 output), for the true class (y for f, s for g), and the two heatmaps are pushed apart:

    L = CE(f(x), y) + λ_c·CE(g(x), s) + λ_s·mean_b Sim(H_f, H_g)        (Eq. 4; BCE for one logit)

``ex2l_sim_grad`` = both lets the Sim gradient reach both models (the literal joint
minimisation); label_only detaches H_g (a static spatial prior).  Binary heads (label or
confounder model) have one logit z by default, trained with BCE, Grad-CAM target z if the target
is 1 and −z if it is 0 (METHODS §A.7, §C.25; eX2L App. B.1); ``ex2l_single_logit: false`` gives them
two logits and CE instead.  Prediction uses f only; a single logit is returned as the two logits
(0, z), so the evaluator's argmax predicts 1 iff z > 0 and nothing downstream needs to know.

Paper protocol (beyond these defaults): ResNet-50 IMAGENET1K_V2 (CMNIST upsampled to 224×224,
``input_resize``, §C.13), up to 300 epochs with early stopping (patience 10) on
J = (AA + WGA)/2 on validation, 20 random trials, seeds 42, 8, 777 (sweeps/ex2l_cmnist.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from ..datasets.base import Batch
from ..errors import UserError
from ..hparams import HParam, choice, one_of, positive, uniform
from ..networks import Featurizer
from . import register_algorithm
from .base import COMMON_HPARAMS, Algorithm, TaskInfo
from .gradcam import class_logits, grad_cam, head_loss
from .heatmap_similarity import SEARCHED, SIMILARITIES


@dataclass
class Terms:
    """The three unweighted terms of Eq. 4 and the two heatmaps, all in the graph."""

    ce: Tensor
    ce_confounder: Tensor
    sim: Tensor
    h_f: Tensor
    h_g: Tensor


class CamModel(nn.Module):
    """A featurizer and a linear head; ``forward`` also returns the body's map for Grad-CAM."""

    def __init__(self, featurizer: Featurizer, n_out: int, single_logit: bool):
        super().__init__()
        self.featurizer = featurizer
        self.head = nn.Linear(featurizer.n_outputs, 1 if single_logit and n_out == 2 else n_out)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        maps = self.featurizer.body(x)
        return maps, self.head(self.featurizer.neck(maps))


@register_algorithm("eX2L")
class EX2L(Algorithm):
    requires = frozenset({"s", "g"})
    HPARAMS = {
        "ex2l_lambda_c": HParam(1.0, uniform(0.1, 100.0), positive, "confounder CE weight"),
        "ex2l_lambda_s": HParam(1.0, uniform(0.1, 100.0), positive, "similarity weight"),
        "ex2l_similarity": HParam("mae", choice(SEARCHED), one_of(*SIMILARITIES)),
        "ex2l_sim_grad": HParam("both", None, one_of("both", "label_only")),
        "ex2l_single_logit": HParam(True, None, None,
                                    "binary heads: one logit, BCE, ±z target (false: two logits, CE)"),
        # lr / weight_decay are the label model's; the confounder model's follow the same space
        "confounder_lr": COMMON_HPARAMS["lr"],
        "confounder_weight_decay": COMMON_HPARAMS["weight_decay"],
        "optimizer": replace(COMMON_HPARAMS["optimizer"], default="sgd"),
        "batch_size": replace(COMMON_HPARAMS["batch_size"], default=128, sample=None, large=None),
        # uniform_group is critical for eX2L (paper Table 3)
        "sampler": replace(COMMON_HPARAMS["sampler"], default="uniform_group"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        single = hparams["ex2l_single_logit"]
        self.label_model = CamModel(self.make_featurizer(), task.num_classes, single)
        self.confounder_model = CamModel(self.make_featurizer(), task.num_attributes, single)
        if isinstance(self.label_model.featurizer.body, nn.Identity):
            raise UserError(f"eX2L needs a convolutional backbone for Grad-CAM; arch "
                            f"{hparams['arch']} has no conv feature map (try mnist_cnn or resnet50)")
        self.optimizer = self.make_optimizer(self.label_model.parameters())
        self.confounder_optimizer = self.make_optimizer(
            self.confounder_model.parameters(), hparams["confounder_lr"],
            hparams["confounder_weight_decay"])
        self.scheduler = self.make_scheduler(self.optimizer)
        self.confounder_scheduler = self.make_scheduler(self.confounder_optimizer)

    def objective(self, b: Batch) -> Terms:
        maps_f, out_f = self.label_model(b.x)
        maps_g, out_g = self.confounder_model(b.x)
        h_f, h_g = grad_cam(maps_f, out_f, b.y), grad_cam(maps_g, out_g, b.s)
        if self.hparams["ex2l_sim_grad"] == "label_only":
            h_g = h_g.detach()
        sim = SIMILARITIES[self.hparams["ex2l_similarity"]](h_f, h_g).mean()
        return Terms(head_loss(out_f, b.y), head_loss(out_g, b.s), sim, h_f, h_g)

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        t = self.objective(Batch.cat(batches))
        hp = self.hparams
        loss = t.ce + hp["ex2l_lambda_c"] * t.ce_confounder + hp["ex2l_lambda_s"] * t.sim
        self.step_optimizer(loss, (self.optimizer, self.confounder_optimizer),
                            (self.scheduler, self.confounder_scheduler))
        return {"loss": loss.detach(), "ce": t.ce.detach(),
                "ce_confounder": t.ce_confounder.detach(), "sim": t.sim.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return class_logits(self.label_model(x)[1])
