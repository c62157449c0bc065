"""Built-in evaluators: probes, predictor finetuning and world-model (equivariance) metrics.

Contract: ``jepa_core.registries.evaluators``. Every evaluator is deterministic given
the run's seed, evaluates on deterministic centre crops (``build_eval_loader``,
never the training augmentations) and returns ``{metric: float}``.

=====================  ======================  ==============================================
name                   needs                   metrics
=====================  ======================  ==============================================
linear_probe           --                      top1
attentive_probe        --                      top1
knn                    --                      top1_k<k> for every k
predictor_finetune     predictor               top1, top1_random_predictor, gain
multitask_predictor    predictor               top1_<task> per task, top1_mean
equivariance_mrr       predictor, actions      mrr, chance, mrr_<op> per target op
retrieval_grid         predictor, actions      top1_retrieval (and a PNG at ``path``)
spectrum               predictor, actions      mrr_<op>, r2_<op> per action op (and a PNG)
token_variance         --                      image_share, position_share, local_share, spread
=====================  ======================  ==============================================

The implementations live beside this module in ``probes``, ``predictor``,
``equivariance``, ``spectrum`` and ``tokens`` (shared code: ``subsets``, ``features``,
``heads``, ``seeding`` and ``fields``); only this module holds a hook, so only it
needs an entry point.
"""

from __future__ import annotations

from jepa_core.api import hookimpl
from jepa_core.plugins.evaluators.equivariance import EquivarianceMRR, RetrievalGrid
from jepa_core.plugins.evaluators.predictor import MultitaskPredictor, PredictorFinetune
from jepa_core.plugins.evaluators.probes import KNN, AttentiveProbe, LinearProbe
from jepa_core.plugins.evaluators.spectrum import Spectrum
from jepa_core.plugins.evaluators.tokens import TokenVariance

EVALUATORS = {
    "linear_probe": LinearProbe,
    "attentive_probe": AttentiveProbe,
    "knn": KNN,
    "predictor_finetune": PredictorFinetune,
    "multitask_predictor": MultitaskPredictor,
    "equivariance_mrr": EquivarianceMRR,
    "retrieval_grid": RetrievalGrid,
    "spectrum": Spectrum,
    "token_variance": TokenVariance,
}


@hookimpl
def jepa_register_evaluators(registry) -> None:
    for name, cls in EVALUATORS.items():
        registry.register(name, cls)
