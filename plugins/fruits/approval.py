"""Approval of a new PCA basis by an operator (Airflow's human-in-the-loop), when the Variable
`fruits_basis_approval` is `required` (default `off`: nothing is asked, the run is unchanged).

With approval required, no basis changes unasked: an `auto` night that already has a basis projects
on it (its drift is still measured and reported), and a run whose plan fits a new basis (Param
`pca_mode=refit`, `pca_k` or `pca_variance`) waits in `approve_new_basis`, before any cluster, for an
operator's Approve (the run goes on) or Reject (the run's work is skipped; the lock is released). The
form shows the plan's figures: the current basis, the batches and rows the fit reads, the drift
measured on the current basis by the last nightly PCA, the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from fruits import lake, steps
from fruits.run_params import RunParams
from fruits.settings import PipelineSettings

TASK_ID = "approve_new_basis"


def effective_mode(settings: PipelineSettings, params: RunParams, current_basis: int | None) -> str:
    """The PCA mode the jobs get: the Param's (RunParams.mode_for), except that with approval required an
    auto night projects on an existing basis (a drift never moves the outputs to a new basis unasked)."""
    mode = params.mode_for(current_basis)
    if settings.basis_approval_required and mode == steps.PCA_AUTO and current_basis is not None:
        return steps.PCA_PROJECT
    return mode


def last_drift(store: Any, root: str, work: Mapping[str, Any]) -> dict[str, Any] | None:
    """The drift on the current basis that the newest committed nightly measured (its report.json)."""
    version, done = work.get("current_basis"), [b for b in work.get("rows", {}) if b not in work.get("nightly", [])]
    for batch in sorted(done, reverse=True)[:1]:
        marker = lake.read_commit(store, lake.pca_reduced_uri(root, version, batch)) if version else None
        data = store.read_or_none(marker["location"] + lake.PCA_REPORT_FILE) if marker else None
        if data:
            report = json.loads(data)
            return {"batch": batch, **(report.get("drift_on_basis") or report.get("drift") or {})}
    return None


def request(
    settings: PipelineSettings, params: RunParams, work: Mapping[str, Any], drift: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """What the approval form shows (plain data, XCom), or None when nothing is to be approved."""
    if not settings.basis_approval_required or not work.get("nightly"):
        return None
    current = work.get("current_basis")
    if current is None or effective_mode(settings, params, current) != steps.PCA_REFIT:
        return None  # the first basis needs no approval: nothing is replaced
    window = work["windows"][work["nightly"][0]]
    figures = {
        "batch": work["batch"],
        "current_basis": current,
        "asked_by": "Param pca_mode=refit" if params.pca_mode == steps.PCA_REFIT else "Param pca_k / pca_variance",
        "fit_batches": window,
        "fit_rows": sum(work["rows"].get(b, 0) for b in window),
        "reexpressed_batches": len(work.get("reexpress", [])),
        "k": params.pca_k,
        "variance": params.pca_variance,
        "drift_threshold": params.pca_drift_threshold or settings.drift_threshold,
        "last_drift_on_current_basis": dict(drift) if drift else None,
    }
    lines = [f"- **{name.replace('_', ' ')}**: {json.dumps(value)}" for name, value in figures.items()]
    body = (
        f"Night {work['batch']} fits a new PCA basis to replace basis {current}: on Approve, its outputs and "
        f"every retained batch move to it; on Reject, the run stops before any cluster.\n\n" + "\n".join(lines)
    )
    return {"figures": figures, "body": body}


class NewBasisApproval(ApprovalOperator):
    """Waits for an operator when plan_jobs asks for an approval (`request`); otherwise succeeds at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(subject="Fruits!: approve a new PCA basis", body="", **kwargs)

    def execute(self, context: Any) -> Any:
        asked = context["ti"].xcom_pull(task_ids="plan_jobs", key="basis_approval")
        if not asked:
            self.log.info("no new basis to approve tonight (fruits_basis_approval off, or none fitted)")
            return None
        self.body = asked["body"]
        return super().execute(context)
