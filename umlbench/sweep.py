"""Sweeps: a grid of methods x seeds, run locally in sequence or submitted to SLURM (submitit).

A method entry is ``name`` or ``name:key=value:key=value`` (config overrides for that entry),
e.g. ``finetune:loss.name=arcface:method.setting=specific``. Every job is one ``umlbench run``
and writes its own record, so a sweep can be interrupted and re-run (finished jobs are skipped
when ``skip_done``: a completed record of the same seed, config identity and data identity; see
:mod:`umlbench.results.identity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from umlbench.errors import UserError

__all__ = ["Job", "parse_grid", "run_job", "sweep"]


@dataclass(frozen=True)
class Job:
    method: str
    seed: int
    overrides: tuple[str, ...] = ()
    suite: str = "mini"
    config_file: str | None = None
    data_root: str | None = None
    results_dir: str | None = None
    work_dir: str | None = None
    keep_checkpoints: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = "".join(f":{o}" for o in self.overrides)
        return f"{self.method}{opts} seed {self.seed}"


def parse_grid(methods: list[str], seeds: list[int], common: list[str], **kw) -> list[Job]:
    jobs = []
    for entry in methods:
        name, *opts = entry.split(":")
        if not name:
            raise UserError(f"bad method entry {entry!r}; use name or name:key=value")
        for seed in seeds:
            jobs.append(Job(name, seed, tuple(common) + tuple(opts), **kw))
    return jobs


def run_job(job: Job) -> list[str]:
    """Run one job in this process; returns the record paths (a picklable function for
    submitit)."""
    from umlbench.runner import build_config, run

    cfg = build_config(job.method, job.suite, job.config_file, list(job.overrides),
                       seed=job.seed, data_root=job.data_root)
    out = run(cfg, results_dir=Path(job.results_dir) if job.results_dir else None,
              work_dir=Path(job.work_dir) if job.work_dir else None, resume=True,
              keep_checkpoints=job.keep_checkpoints)
    return [str(p) for _, p in out if p is not None]


def _done(job: Job) -> bool:
    """A completed record of this job's seed exists with the same config identity and the
    data identity of what is prepared now (records without data identity never count)."""
    from umlbench import paths
    from umlbench.config import to_dict
    from umlbench.results.identity import config_identity, data_key
    from umlbench.results.store import load_records
    from umlbench.runner import build_config, load_protocol, protocol_data_identity

    cfg = build_config(job.method, job.suite, job.config_file, list(job.overrides),
                       seed=job.seed, data_root=job.data_root)
    config_sha = config_identity(to_dict(cfg))["sha256"]
    root = Path(job.results_dir) if job.results_dir else paths.default_results_dir()
    candidates = [rec for rec in load_records([root / job.suite], warn=lambda m: None)
                  if rec.status == "completed" and rec.seed == job.seed
                  and rec.identity["config"]["sha256"] == config_sha
                  and rec.identity["data"] is not None]
    if not candidates:
        return False
    try:
        data = load_protocol(cfg, paths.data_root(cfg.data_root))
    except UserError:
        return False  # not prepared: running the job says what is missing
    current = data_key(protocol_data_identity(data))
    return any(data_key(rec.identity["data"]) == current for rec in candidates)


def sweep(jobs: list[Job], executor: str = "local", folder: Path = Path("sweeps"),
          slurm: dict | None = None, skip_done: bool = True, echo=print) -> list:
    """Run ``jobs``. executor: "local" (in this process, one after another), "slurm"
    (submitit on a SLURM cluster) or "submitit-local" (submitit's local executor, for testing
    the submission path on one machine). Returns record paths (local) or submitit jobs."""
    todo = [j for j in jobs if not (skip_done and _done(j))]
    for j in jobs:
        if j not in todo:
            echo(f"skip (done): {j.label}")
    if executor == "local":
        out = []
        for j in todo:
            echo(f"run: {j.label}")
            out += run_job(j)
        return out
    try:
        import submitit
    except ImportError:
        raise UserError("executor slurm needs submitit: pip install 'umlbench[slurm]'") from None
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    elif executor == "submitit-local":
        ex = submitit.LocalExecutor(folder=str(folder))
    else:
        raise UserError(f"unknown executor {executor!r}; known: local, slurm, submitit-local")
    params = dict(slurm or {})
    if executor == "slurm":
        params = {f"slurm_{k}" if not k.startswith("slurm_") and k not in (
            "timeout_min", "gpus_per_node", "cpus_per_task", "nodes", "tasks_per_node",
            "mem_gb", "name") else k: v for k, v in params.items()}
    params.setdefault("timeout_min", 60 * 24)
    ex.update_parameters(**params)
    submitted = [ex.submit(run_job, j) for j in todo]
    for j, s in zip(todo, submitted):
        echo(f"submitted {s.job_id}: {j.label}")
    return submitted
