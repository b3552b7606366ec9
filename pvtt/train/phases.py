"""The teacher's three chained phases (which params each trains with), and the students' chain.

The seed trains the teacher in phases: a quick LoRA run on the 1.3B model at 480p that
validates the recipe, LoRA on the 14B model at 720p, then the same with more layers
unfrozen. Each phase is a rule (``teacher_phase1`` -> ``teacher_phase2`` -> ``teacher``) whose
params are the shared ``teacher`` keys overridden by ``teacher_phases.<phase>``. Only phase 1
may train another model or resolution (``model`` / ``train_data`` overrides): phases 2 and 3
train the model the students distil, from the top-level latent cache.

No torch here: the Snakefile imports it at parse time.
"""
from __future__ import annotations

# (phase, rule) in training order, defined once: the rules, dvc.yaml and the CLI read it from here.
# Phase 3's rule is `teacher`, the one the students distil.
TEACHER_PHASES = (("phase1", "teacher_phase1"), ("phase2", "teacher_phase2"), ("phase3", "teacher"))
PHASES = tuple(phase for phase, _ in TEACHER_PHASES)
# The students and what each starts from: the chain (each from the previous one, student_16 from
# the teacher), then the comparison student, another method from student_4's own start, so that
# the report compares methods and nothing else (nothing downstream reads it).
STUDENT_INIT = {"student_16": "teacher", "student_8": "student_16", "student_4": "student_8", "student_alt": "student_8"}
STUDENTS = tuple(STUDENT_INIT)


def phase_params(params: dict, phase: str) -> dict:
    """The flat params one phase trains with: ``teacher`` overridden by ``teacher_phases.<phase>``."""
    if phase not in PHASES:
        raise ValueError(f"teacher phase '{phase}' is not one of {', '.join(PHASES)}")
    over = dict((params.get("teacher_phases") or {}).get(phase) or {})
    model, td = dict(params.get("model", {})), dict(params["train_data"])
    for key, base in (("model", model), ("train_data", td)):
        value = over.pop(key, None)
        if value and phase != "phase1":
            raise ValueError(f"teacher_phases.{phase}.{key}: only phase1 may train another model or resolution "
                             "(phases 2 and 3 train the model the students distil)")
        base.update(value or {})
    return {**params, "model": model, "train_data": td, "teacher": {**params.get("teacher", {}), **over},
            "phase": phase}


def phase1_spec(params: dict) -> tuple[dict, dict] | None:
    """(model, train_data) of teacher phase 1 when they differ from the top-level ones, else None."""
    p = phase_params(params, "phase1")
    return None if (p["model"], p["train_data"]) == (params.get("model", {}), params["train_data"]) else (
        p["model"], p["train_data"])
