"""The end-to-end demo (`medmllm demo`, what `make demo` runs): data whose truth is known, in, a
model a clinician can talk to, out.

    1. scans     read the real scans of ../shared/data/scans, previews, the papers' recipes,
                 a DICOM round trip with de-identification (`medmllm.cli.demo.scans_tour`)
    2. LLM       the recipe's LLM (SmolLM2-135M-Instruct for recipes/demo.yaml), fetched once if missing
    3. MiniRad   synthetic chest X-rays and CTs with known findings, reports, questions, records
    4. datasets  P2Med's three stage datasets from MiniRad's train split (`stage_datasets`), and
                 the same text without images for the blind model
    5. train     recipes/demo.yaml: knowledge infusion, task-balanced, disease-balanced
    6. eval      the trained model, the untrained model and the blind model on the held-out
                 MiniRad patients (`medmllm.demo.benchmark`): diagnosis accuracy and CheXpert label
                 F1 of first-exam reports with 95% CIs (`medmllm.eval`), and the trained model's
                 follow-up impressions (P2Med's Table III); an HTML report each, and a summary
    7. serve     how to start `medmllm serve` on the result

Everything lands under one folder (``demo-out/`` by default).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmllm.data.schema import Sample, TextPart
from medmllm.demo.benchmark import (
    DIAGNOSIS_TASKS,
    HEADLINE,
    LABEL_F1,
    PARTS,
    REPORT_TASKS,
    always_no_accuracy,
    answers_no,
    first_exams,
    follow_up_numbers,
    follow_ups,
    headline,
    overlap,
    paired_differences,
    predictions_and_references,
    shuffled_label_f1,
    strip_images,
    without_images,
    yes_no_balanced,
)

DEMO_RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "demo.yaml"
INSTRUCTION_STAGES = ("task-balanced", "disease-balanced")  # P2Med's stages 2 and 3, the ones that train the LLM here
DEMO_TASKS = DIAGNOSIS_TASKS + REPORT_TASKS


@dataclass
class DemoConfig:
    out: Path = Path("demo-out")
    n: int = 8000  # MiniRad samples (the train split, 70% of the patients, feeds the stages; val + test the benchmark)
    seed: int = 0
    mrc: bool = True  # train on multi-round conversations over a visit's exams (P2Med); --no-mrc: one exam per sample
    # the task families the stages train on (None: all of MiniRad's): the ones the benchmark asks,
    # so that a few minutes of steps go to them (--all-tasks trains on every family, slower)
    tasks: tuple[str, ...] | None = DEMO_TASKS
    # the report conversations' tokens per yes/no questions' tokens in stage 2 and in stage 3:
    # stage 2 mostly teaches reading the image (questions, cheap), stage 3 weights the reports up;
    # in ten CPU minutes the model still learns to answer a report request "no" (docs/demo.md)
    report_share: tuple[float, float] = (0.5, 2.0)
    # extra yes/no rounds after each training question, about other findings of the same image
    # (`more_questions`): the LLM's practice at reading the image, which the encoder already sees; 0 keeps
    # MiniRad's one question per image (docs/demo.md, "More questions per image")
    question_rounds: int = 4
    # the stages whose yes/no training questions open with the report of their image (`with_report_round`):
    # with the warm-up's snap_to_words (recipes/demo.yaml) the first-exam reports then follow the image.
    # Stage 3 only: in both stages the reports were as good, diagnosis accuracy lower (0.580 vs 0.650)
    # and the demo 4.5 minutes slower (docs/demo.md, "Reports from the image"); --no-report-rounds: ()
    report_rounds: tuple[str, ...] = ("disease-balanced",)
    # the instruction stages whose report conversations are split into their exams (`stage_datasets`):
    # stage 2 (lr 1e-4, where the LLM learns most) then learns each report from its own image alone and
    # the first-exam reports followed the image in more runs; stage 3 keeps the visits' conversations,
    # for the follow-up exams (docs/demo.md, "Stage 2 on single exams"); --single-exam-stages none: ().
    # A follow-up's report alone is said as its image shows it, without its course (`single_image`)
    single_exam_stages: tuple[str, ...] = ("task-balanced",)
    # a report round of a follow-up exam after its prior exam and report, its course kept (`exam_reports`):
    # the follow-up impressions then state a course (change F1 0.00 -> 0.19 at seed 0), but stage 3 has
    # ~55% more tokens: about a minute more on the 2-core EPYC, ~1.6 estimated on the Xeon in fp32, past
    # ten minutes there (docs/demo.md, "Course rounds")
    course_rounds: bool = False
    recipe: Path = DEMO_RECIPE
    # held-out samples per benchmark part and model (None: all): many short diagnosis answers
    # (4 tokens each) for a tight CI, fewer 80-token reports (they take most of the evaluation time);
    # the follow-up reports (P2Med's prompts over a whole visit, ~390 tokens) are the dearest of all
    eval_limits: dict[str, int | None] = field(default_factory=lambda: {"diagnosis": 520, "reports": 64, "follow-up": 32})
    # A second MiniRad draw, all held out, of this share of n samples (patients from BENCHMARK_PATIENT
    # on, so none is in the first draw): more yes/no questions for the benchmark without changing what
    # trains (the first draw's split, and so the stage datasets, stay as they were); 0: none
    benchmark_draw: float = 1 / 3
    max_new_tokens: int = 96
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)


# The first patient of the demo's benchmark-only MiniRad draw: past the patients of any first draw
# (~12 samples each: 8,000 samples are 649 patients), so the two share no patient.
BENCHMARK_PATIENT = 1_000_000

# Generation batch per benchmark part, the fastest on a 2-core CPU (benchmarks/eval_batching.py: reports
# and diagnosis ~0.75x the time of batches of 16; the long follow-up prompts were slower above 16).
EVAL_BATCH_SIZES = {"diagnosis": 64, "reports": 64, "follow-up": 16}


def rebase(samples: list[Sample], source: Path, folder: Path) -> list[Sample]:
    """The samples with their image paths (relative to ``source``, MiniRad's folder) made relative to ``folder``."""
    import os

    def moved(ref):
        path = ref.path if os.path.isabs(ref.path) else os.path.relpath(source / ref.path, folder)
        return ref.model_copy(update={"path": path})

    return [s.model_copy(update={"images": [moved(ref) for ref in s.images]}) if s.images else s for s in samples]


def stage_datasets(train: list[Sample], folder: Path, seed: int, *, blind: bool = False, source: Path | None = None,
                   mrc: bool = True, tasks: tuple[str, ...] | None = None, length_of=None,
                   report_share: tuple[float, float] = (1.0, 1.0), sizes: dict[str, int] | None = None,
                   question_rounds: int = 0, report_rounds: tuple[str, ...] = (),
                   single_exam_stages: tuple[str, ...] = (), course_rounds: bool = False) -> dict[str, Path]:
    """P2Med's stage datasets (section V-B) from MiniRad's train samples, as JSONL in ``folder``.

    knowledge         image-report pairs (stage 1: medical knowledge infusion)
    task-balanced     every task family, the same number of samples each (stage 2)
    disease-balanced  samples drawn per disease category, normal studies included (stage 3)

    ``blind``: the same samples with their images removed (the text-only comparison model).
    ``source``: the folder the samples' image paths are relative to (default ``folder``).
    ``mrc=False``: each report conversation split into its exams, one sample each (P2Med's "w/o MRC").
    ``question_rounds``: each yes/no question of the two instruction stages followed by up to that
    many more about the same image (`more_questions`), after the balancing (the blind model's too).
    ``report_rounds``: the instruction stages ("task-balanced", "disease-balanced") whose yes/no
    questions open with the report of their image (`with_report_round`), after the question rounds
    (the blind model's too).
    ``course_rounds``: a follow-up exam's report round comes after the exam before it and its
    report, and keeps its course since then (`exam_reports` with ``prior``); without it the report
    is said as the image alone shows it.
    ``single_exam_stages``: the instruction stages whose report conversations are split into their
    exams, one sample each, as with ``mrc=False`` (the other stages keep the visits' conversations).
    ``tasks``: the task families kept (None: all).
    ``length_of``: a sample's length in tokens (default: its characters, `text_length`).
    ``sizes``: {stage: samples} for task-balanced and disease-balanced (`stage_sizes`: what the
    recipe's steps take), so that a stage trains one epoch of the mix balanced here. With more
    samples than the steps take, the length-grouped sampler (longest first) decides the mix: stage
    3 of the demo trained 80 reports where its 240 samples were to hold 48, and the minutes varied
    with the seed.

    Stage 2 balances the task families by tokens, not by samples (`token_balanced_counts`): a
    report conversation over a visit (~480 tokens) costs a CPU step as much as eight yes/no
    questions (~60), so equal sample counts would spend nine tenths of the demo's minutes on
    reports. The two report tasks (radiographs, CT) are one family, and it gets ``report_share[0]``
    times the tokens of each other family. Stage 3 draws per disease category (normal included) and
    is balanced the same way, the reports with ``report_share[1]``.

    Yes/no diagnosis questions are balanced first, as many "no" as "yes" (`balance_normal` over the
    answers): MiniRad asks every normal exam a "no" question, two answers in three are "no", and a
    few minutes of steps on that learn to say "no" (0.66 of such questions right, none told apart).
    The family's share is then drawn half "no", half "yes" (`answer_halves`), not at random.
    """
    from medmllm.data.conversations import split_conversation
    from medmllm.data.curate.balance import balance_by_category, balance_by_task, balance_normal, diseases_of
    from medmllm.data.io import write_samples

    unknown = set(single_exam_stages) - set(INSTRUCTION_STAGES)
    if unknown:
        raise ValueError(f"single_exam_stages: {sorted(unknown)} are not instruction stages {INSTRUCTION_STAGES}")
    folder.mkdir(parents=True, exist_ok=True)
    if tasks is not None:
        train = [s for s in train if s.task in tasks]
    length_of = length_of or text_length

    def balanced(samples: list[Sample], reports: float, size: int | None) -> list[Sample]:
        """As many "no" as "yes" answers, then the families balanced by tokens (``reports``: the
        reports' share), ``size`` samples in all (None: as many as the balance keeps), the yes/no
        questions drawn half "yes", half "no" (`answer_halves`)."""
        samples, _ = balance_normal(samples, lambda s: answers_no(s) if s.task in DIAGNOSIS_TASKS else None, seed=seed)
        counts = token_balanced_counts(samples, task_family, length_of, {"reports": reports})
        counts = scaled_counts(counts, size) if size else counts
        return balance_by_task(samples, answer_halves(counts), seed, task_of=family_and_answer)[0]

    def single_exams(samples: list[Sample]) -> list[Sample]:
        return [one for s in samples for one in (split_conversation(s) if s.task in REPORT_TASKS else [s])]

    if not mrc:  # P2Med's "w/o MRC": each exam alone with its report as written, comparisons and all
        train = single_exams(train)
    split = single_exams(train) if single_exam_stages else train
    if mrc and single_exam_stages:  # each exam's report asked of its image alone: said as that image shows it
        split = [single_image(s) for s in split]
    train_of = {stage: split if stage in single_exam_stages else train for stage in INSTRUCTION_STAGES}
    knowledge = [s for s in train if s.task in REPORT_TASKS or s.task == "radbench/report"]
    sizes = sizes or {}
    task_balanced = balanced(train_of["task-balanced"], report_share[0], sizes.get("task-balanced"))
    # drawn per disease, then balanced again: the draw favours questions about a disease the
    # patient has, and a stage of mostly "yes" taught the model to answer a report request "yes"
    stage3 = train_of["disease-balanced"]
    by_disease, _ = balance_by_category(stage3, lambda s: diseases_of(s) or ["normal"], cap=max(20, len(stage3) // 12), seed=seed)
    disease_balanced = balanced(by_disease, report_share[1], sizes.get("disease-balanced"))
    if question_rounds:
        rng = random.Random(seed)
        task_balanced, disease_balanced = ([more_questions(x, question_rounds, rng) for x in part] for part in (task_balanced, disease_balanced))
    stages = {"knowledge": knowledge, "task-balanced": task_balanced, "disease-balanced": disease_balanced}
    reports = exam_reports(train, prior=course_rounds) if report_rounds else {}
    for name in report_rounds:
        stages[name] = [with_report_round(x, reports) for x in stages[name]]
    paths = {}
    for name, samples in stages.items():
        samples = [strip_images(s) for s in samples] if blind else rebase(samples, source or folder, folder)
        path = folder / f"{name}.jsonl"
        write_samples(path, samples)
        paths[name] = path
    paths["vision-warmup"] = paths["knowledge"]  # recipes/demo.yaml's first stage reads the reports' labels
    return paths


def more_questions(sample: Sample, rounds: int, rng: random.Random) -> Sample:
    """A yes/no diagnosis question (MiniRad's, with its labels) followed by up to ``rounds`` more
    about the same image, in the same conversation: as many "yes" (other findings the exam has) as
    "no" (findings of its body region it lacks), in random order, asked with the question templates
    of ``radbench/diagnosis-judgement``. Any other sample, or an exam with no other finding to pair
    a "no" with, is returned as it is.

    Why: MiniRad asks one question per image, so a stage-2 step of eight questions carries eight
    answer tokens, and in the demo's 90 steps the LLM saw each finding asked a few dozen times.
    Follow-up rounds cost ~20 tokens each, not a second image and prompt (docs/demo.md)."""
    from medmllm.data.schema import Turn
    from medmllm.data.templates import get_template
    from medmllm.synth.findings import BRAIN_TYPES, CHEST_TYPES, FINDING_TYPES

    if sample.task not in DIAGNOSIS_TASKS:
        return sample
    had = set(sample.labels.get("diseases") or [])
    asked = sample.labels.get("asked")
    family = BRAIN_TYPES if sample.labels.get("modality") == "MRI" else CHEST_TYPES
    present = sorted(had - {asked})  # sorted: a set of strings iterates in another order in every process
    absent = [FINDING_TYPES[t].disease for t in family if FINDING_TYPES[t].disease not in had | {asked}]
    rng.shuffle(present)
    rng.shuffle(absent)
    pairs = min(len(present), len(absent), rounds // 2)
    if not pairs:
        return sample
    extra = [(d, "yes") for d in present[:pairs]] + [(d, "no") for d in absent[:pairs]]
    rng.shuffle(extra)
    forms = [p.text.replace("{images}", "").strip() for p in get_template("radbench/diagnosis-judgement").prompts]
    turns = list(sample.turns)
    for disease, answer in extra:
        turns += [Turn(role="user", content=[TextPart(text=rng.choice(forms).format(disease=disease))]),
                  Turn(role="assistant", content=[TextPart(text=answer)])]
    return sample.model_copy(update={"turns": turns})


def exam_reports(samples: list[Sample], prior: bool = False) -> dict[str, Sample]:
    """{exam id: that exam's report as a one-exam sample, as its image alone shows it (`single_image`)}
    of the report samples among ``samples``. ``prior``: a follow-up exam's report after the round of
    the exam before it (its image, the report request and its report), as the visit's conversation
    has them, so that what it says about the prior exam has that exam before it."""
    from medmllm.data.conversations import split_conversation

    return {one.images[-1].exam: one if one.meta.get("context_rounds") else single_image(one)
            for s in samples if s.task in REPORT_TASKS for one in split_conversation(s, context=int(prior)) if one.images}


def single_image(sample: Sample) -> Sample:
    """A one-exam report sample with its report as the image alone shows it: what it says about the
    prior exam left out (`medmllm.synth.reports.single_image_report`); any other sample as it is.

    Why: cut from a visit's conversation, a follow-up exam's report ("It has decreased in size
    compared with the prior exam (previously 38 mm).") is asked of one image with no prior exam
    before it, and the demo's single-exam stage 2 and report rounds taught the model to compare
    with a prior exam on first exams too (docs/demo.md, "Course words on first exams")."""
    from medmllm.synth.reports import single_image_report, single_image_sections

    if sample.task not in REPORT_TASKS or len(sample.images) != 1:
        return sample
    turns = [t.model_copy(update={"content": [p.model_copy(update={"text": single_image_report(p.text)}) if isinstance(p, TextPart) else p
                                              for p in t.content]}) if t.role == "assistant" else t for t in sample.turns]
    targets = dict(sample.targets)
    if "findings" in targets or "impression" in targets:
        targets.update(zip(("findings", "impression"), single_image_sections(targets.get("findings", ""), targets.get("impression", ""))))
    return sample.model_copy(update={"turns": turns, "targets": targets})


def with_report_round(sample: Sample, reports: dict[str, Sample]) -> Sample:
    """A yes/no diagnosis question with the report of its image (from ``reports``, `exam_reports`)
    as the conversation's first round: the image, the report request and the report, then the
    questions about the same image. Any other sample, or an exam without a report, as it is.

    Why: the demo's report conversations give the LLM few first-exam reports, the only ones where
    nothing but the image says what to write (later rounds can copy the earlier report); this adds
    one per question (docs/demo.md, "Reports from the image"). The cost: the answers can then be
    read off the report before them, and ~90 more tokens per question. A report after its prior exam's
    round (`exam_reports` with ``prior``) brings that exam's image along: the question's image is then
    the last of the sample's."""
    report = reports.get(sample.images[0].exam) if sample.task in DIAGNOSIS_TASKS and sample.images else None
    if report is None:
        return sample
    images = sample.images if len(report.images) == 1 else report.images
    return sample.model_copy(update={"turns": [*report.turns, without_images(sample.turns[0]), *sample.turns[1:]], "images": images})


def task_family(sample: Sample) -> str:
    """The report tasks (radiographs, CT) are one family; every other task its own."""
    return "reports" if sample.task in REPORT_TASKS else sample.task


def family_and_answer(sample: Sample) -> str:
    """`task_family`, with "/yes" or "/no" after a yes/no diagnosis question's family."""
    family = task_family(sample)
    return family + ("/no" if answers_no(sample) else "/yes") if sample.task in DIAGNOSIS_TASKS else family


def answer_halves(counts: dict[str, int]) -> dict[str, int]:
    """{`family_and_answer`: samples} from {`task_family`: samples}: a yes/no family's count split in
    half. A draw of the whole family drifted from the balance: at MiniRad seed 1 stage 2 held 148
    "no" and 190 "yes" first questions, and the trained model answered "yes" 333 times of 380
    (accuracy 0.545 where its yes-no logit ranked the answers with AUROC 0.646; docs/demo.md)."""
    out = {}
    for family, count in counts.items():
        if family in DIAGNOSIS_TASKS:
            out[f"{family}/no"], out[f"{family}/yes"] = count // 2, count - count // 2
        else:
            out[family] = count
    return out


def text_length(sample: Sample) -> int:
    """Characters of text in the sample's turns (a stand-in for its tokens)."""
    return sum(len(part.text) for turn in sample.turns for part in turn.content if getattr(part, "text", None))


def token_balanced_counts(samples: list[Sample], family_of, length_of, shares: dict[str, float] | None = None) -> dict[str, int]:
    """{family: samples to keep} so that every family keeps about as many tokens (``length_of``) as
    the family with the fewest tokens in all has (that family keeps all its samples, the others a
    share), times ``shares[family]`` (default 1) for the families named there."""
    from collections import defaultdict

    shares = shares or {}
    members: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        members[family_of(s)].append(length_of(s))
    budget = min(sum(lengths) / shares.get(family, 1.0) for family, lengths in members.items())
    return {family: min(len(lengths), max(1, round(budget * shares.get(family, 1.0) / (sum(lengths) / len(lengths)))))
            for family, lengths in members.items()}


def scaled_counts(counts: dict[str, int], total: int) -> dict[str, int]:
    """``counts`` scaled down to ``total`` in all, in the same proportions (each at least 1; never
    scaled up: a family cannot keep more samples than it has)."""
    if total >= sum(counts.values()):
        return dict(counts)
    exact = {family: count * total / sum(counts.values()) for family, count in counts.items()}
    scaled = {family: max(1, int(x)) for family, x in exact.items()}
    for family in sorted(exact, key=lambda f: exact[f] - int(exact[f]), reverse=True)[: max(0, total - sum(scaled.values()))]:
        scaled[family] += 1  # largest remainders first
    return scaled


def stage_sizes(recipe) -> dict[str, int]:
    """{stage name: the samples its max_steps take} (steps x batch size x accumulation) of the recipe's stages with max_steps."""
    return {s.name: s.max_steps * s.batch_size * s.grad_accum for s in recipe.stages if s.max_steps > 0}


def benchmark(samples: list[Sample], path: Path, source: Path, *, blind: bool = False, limit: int | None = None) -> Path:
    """The first ``limit`` ``samples`` as a JSONL benchmark (images stripped for the blind model)."""
    from medmllm.data.io import write_samples

    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = samples[:limit]
    write_samples(path, [strip_images(s) for s in chosen] if blind else rebase(chosen, source, path.parent))
    return path


def on_datasets(recipe, output_dir: Path, datasets: dict[str, Path], *, llm_only: bool = False):
    """A copy of ``recipe`` writing to ``output_dir``, each stage training on ``datasets[stage name]``
    (no eval file: the demo evaluates afterwards); ``llm_only`` keeps the stages that train the LLM
    (LoRA or its own weights)."""
    recipe = recipe.model_copy(deep=True)
    recipe.run.output_dir = output_dir
    recipe.stages = [s for s in recipe.stages if s.lora is not None or s.train.llm or not llm_only]
    for stage in recipe.stages:
        stage.data.train, stage.data.eval = datasets[stage.name], None
    return recipe


def run_demo(config: DemoConfig) -> dict:
    """Steps 2-7 of the module docstring; returns the summary (also written to OUT/summary.json)."""
    from medmllm.data.io import read_samples
    from medmllm.model.hub import resolve_model
    from medmllm.synth.minirad import MiniRadConfig, generate
    from medmllm.train import load_recipe
    from medmllm.train.trainer import load_start, run_recipe

    out, log = config.out, config.log
    out.mkdir(parents=True, exist_ok=True)

    def step(name: str):
        started = time.perf_counter()
        log(f"== {name}")
        return lambda: config.timings.__setitem__(name, round(time.perf_counter() - started, 1))

    done = step("LLM")
    from medmllm.model.factory import get_preset

    recipe = load_recipe(config.recipe)
    needed = recipe.model.llm or get_preset(recipe.model.preset).llm
    if needed is not None:
        try:
            llm = resolve_model(needed)
        except Exception:
            from medmllm.model.hub import fetch

            log(f"fetching {needed} once (medmllm models fetch {needed})")
            llm = fetch(needed)
        log(f"{needed}: {llm}")
    from medmllm.model.precision import training_precision

    # said up front: bf16 where it measures faster, fp32 elsewhere; the minutes differ a few times over
    precision = training_precision(recipe.run.precision)
    log(f"precision: {precision} (run.precision: {recipe.run.precision})")
    done()

    done = step("MiniRad")
    data = out / "minirad"
    minirad = MiniRadConfig(n=config.n, seed=config.seed, xray_size=(64, 64), ct_shape=(16, 64, 64), modalities={"X-ray": 0.6, "CT": 0.4},
                            val=0.15, test=0.15)
    workers = min(os.cpu_count() or 1, 8)  # the same files for any number of workers (tested)
    if not (data / "truth.jsonl").exists():
        # Always with multi-round conversations: --no-mrc splits them for training (stage_datasets), so
        # that both runs are measured on the same held-out exams.
        # 30% of the patients held out (MiniRad's default is 20%); with the benchmark-only draw below, at
        # n 8000 520 yes/no questions balanced per kind (`yes_no_balanced`): a 95% interval of about
        # +-0.043 on the diagnosis accuracy (+-0.054 at the first draw's 326 alone)
        summary = generate(data, minirad, workers=workers)
        log(f"{summary.samples} samples of {summary.patients} patients ({summary.exams} exams) in {summary.seconds:.1f} s")
    train = list(read_samples(data / "train.jsonl"))
    held_out = list(read_samples(data / "test.jsonl")) + list(read_samples(data / "val.jsonl"))
    if config.benchmark_draw > 0:
        more = out / "minirad-benchmark"
        if not (more / "truth.jsonl").exists():
            summary = generate(more, replace(minirad, n=max(1, round(config.n * config.benchmark_draw)), val=0.0, test=1.0,
                                             first_patient=BENCHMARK_PATIENT), workers=workers)
            log(f"benchmark only: {summary.samples} samples of {summary.patients} more patients in {summary.seconds:.1f} s -> {more}")
        # after the first draw's: its reports and follow-ups come first (the limits take those)
        held_out += rebase(list(read_samples(more / "test.jsonl")), more, data)
    done()

    done = step("untrained model")
    untrained_dir = out / "untrained-model"
    if not (untrained_dir / "config.json").exists():
        from transformers import set_seed

        set_seed(recipe.run.seed)
        model, processor = load_start(recipe, 0)
        model.save_pretrained(untrained_dir)
        processor.save_pretrained(untrained_dir)
        del model
    done()

    done = step("stage datasets")
    from medmllm.model.processor import MedMLLMProcessor

    processor = MedMLLMProcessor.from_pretrained(untrained_dir)
    tokens = lambda s: processor.count_tokens(s.to_messages(data))  # noqa: E731  (no image is read)
    shared = dict(mrc=config.mrc, tasks=config.tasks, length_of=tokens, report_share=config.report_share, sizes=stage_sizes(recipe),
                  question_rounds=config.question_rounds, report_rounds=config.report_rounds,
                  single_exam_stages=config.single_exam_stages, course_rounds=config.course_rounds)
    seeing = stage_datasets(train, out / "data" / "seeing", config.seed, source=data, **shared)
    blind = stage_datasets(train, out / "data" / "blind", config.seed, blind=True, **shared)
    for name, path in seeing.items():
        log(f"{name}: {len(path.read_text().splitlines())} samples -> {path}")
    done()

    # A second `medmllm demo` continues (finished stages are skipped); delete OUT to start over.
    done = step("train (3 stages)")
    trained_dir = run_recipe(on_datasets(recipe, out / "run", seeing), resume=True)[-1].model_dir
    done()

    done = step("train the blind model (text only)")
    blind_recipe = on_datasets(recipe, out / "run-blind", blind, llm_only=True)  # without images only the LLM can learn
    blind_dir = run_recipe(blind_recipe, resume=True)[-1].model_dir
    done()

    done = step("evaluate on the held-out MiniRad patients")
    from medmllm.eval.adapters import build_adapter
    from medmllm.eval.runner import run_eval

    questions = [s for s in held_out if s.task in PARTS["diagnosis"][0]]
    asked, balance = yes_no_balanced(questions, config.eval_limits.get("diagnosis"), seed=config.seed), "of each finding, modality and wording"
    if len(asked) < 2:  # a small --n: too few questions of any one finding
        asked, balance = yes_no_balanced(questions, config.eval_limits.get("diagnosis"), seed=config.seed, kind_of=lambda s: ()), "overall"
        log(f"{len(questions)} held-out yes/no questions are too few to balance per finding, modality and wording: balanced overall")
    parts = {"diagnosis": asked, "reports": first_exams(held_out),
             "follow-up": follow_ups(held_out, mrc=config.mrc)}
    benches = {blind_view: {part: benchmark(samples, out / "data" / f"benchmark{'-blind' if blind_view else ''}" / f"{part}.jsonl", data,
                                            blind=blind_view, limit=config.eval_limits.get(part))
                            for part, samples in parts.items()}
               for blind_view in (False, True)}
    models = {"trained": trained_dir, "untrained": untrained_dir, "blind": blind_dir}
    numbers = {}
    for name, model_dir in models.items():
        adapter = build_adapter("medmllm", model_dir)
        # the follow-up impressions are the trained model's (the --no-mrc comparison, P2Med Table III)
        for part in ("diagnosis", "reports", "follow-up") if name == "trained" else ("diagnosis", "reports"):
            adapter.max_new_tokens, adapter.batch_size = min(PARTS[part][1], config.max_new_tokens), EVAL_BATCH_SIZES[part]
            run_eval(adapter, str(benches[name == "blind"][part]), out / "eval" / name / part, resamples=1000)
        numbers[name] = headline(out / "eval" / name, benches[name == "blind"])
        log(f"{name}: " + "; ".join(f"{k} {described(v)}" for k, v in numbers[name].items()))
    # the same questions and exams, so their difference is the sharper test (the claim is the intervals apart)
    paired = paired_differences(out / "eval" / "trained", out / "eval" / "blind", benches[False], benches[True])
    log("trained - blind on the same questions and exams (paired bootstrap): " + "; ".join(f"{k} {described_difference(v)}" for k, v in paired.items()))
    follow_up = follow_up_numbers(out / "eval" / "trained" / "follow-up", benches[False]["follow-up"])
    # Is a label F1 above the blind model's seeing, or writing findings at their base rate?
    shuffled = {name: shuffled_label_f1(predictions_and_references(out / "eval" / name / "reports", benches[name == "blind"]["reports"]))
                for name in models}
    log(f"trained, follow-up exams ({'with' if config.mrc else 'without'} multi-round conversations): "
        + "; ".join(f"{k} {described(v)}" for k, v in follow_up.items()))
    done()

    comparison = {label: {"trained_vs_blind_cis_overlap": overlap(numbers["trained"][label], numbers["blind"][label]),
                          "trained_better": (numbers["trained"][label]["value"] or 0) > (numbers["blind"][label]["value"] or 0)}
                  for label in HEADLINE}
    summary = {"config": {"n": config.n, "seed": config.seed, "mrc": config.mrc, "recipe": str(config.recipe),
                          "tasks": list(config.tasks) if config.tasks is not None else None, "report_share": list(config.report_share),
                          "question_rounds": config.question_rounds, "benchmark_draw": config.benchmark_draw, "report_rounds": list(config.report_rounds), "course_rounds": config.course_rounds,
                          "single_exam_stages": list(config.single_exam_stages),
                          "precision": precision},
               "models": {name: str(path) for name, path in models.items()}, "numbers": numbers, "comparison": comparison,
               "trained_minus_blind": paired,
               "follow_up": follow_up, "label_f1_shuffled": shuffled, "always_no_accuracy": always_no_accuracy(benches[False]["diagnosis"]),
               "diagnosis_balance": balance,
               "timings_s": config.timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    return summary


def described(number: dict) -> str:
    """``0.627 [0.569, 0.686] (n=263)``, or ``n/a``."""
    if number["value"] is None:
        return "n/a"
    lo, hi = (f"{x:.3f}" if x is not None else "?" for x in number["ci95"])
    return f"{number['value']:.3f} [{lo}, {hi}] (n={number['n']})"


def described_difference(number: dict) -> str:
    """``+0.147 [+0.089, +0.206] (p 0.0001, n=326)``, or ``n/a``."""
    if number["difference"] is None:
        return "n/a"
    lo, hi = number["ci95"]
    return f"{number['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] (p {number['p']:.4f}, n={number['n']})"


def summary_markdown(summary: dict) -> str:
    lines = ["# medmllm demo: held-out MiniRad patients", "",
             "| model | " + " | ".join(HEADLINE) + " |", "|---|" + "---:|" * len(HEADLINE)]
    for name, numbers in summary["numbers"].items():
        lines.append(f"| {name} | " + " | ".join(described(numbers[label]) for label in HEADLINE) + " |")
    lines.append("")
    for label, c in summary["comparison"].items():
        verdict = "better than the blind model" if c["trained_better"] else "NOT better than the blind model"
        ci = {True: "95% CIs overlap", False: "95% CIs do not overlap", None: "CI missing"}[c["trained_vs_blind_cis_overlap"]]
        shuffled = summary["label_f1_shuffled"]["trained"]
        if label == LABEL_F1 and c["trained_better"] and shuffled["p"] is not None and shuffled["p"] >= 0.05:  # better, yet not from the image
            ci += f"; but its reports score as well on other exams (shuffled {shuffled['value']:.3f}, p={shuffled['p']:.2f}): not from the image"
        paired = summary.get("trained_minus_blind", {}).get(label)
        if paired is not None:
            ci += f"; trained - blind on the same samples (paired bootstrap) {described_difference(paired)}"
        lines.append(f"- {label}: trained is {verdict}; {ci}.")
    if summary.get("always_no_accuracy") is not None:
        balance = summary.get("diagnosis_balance", "of each finding and modality")
        rule = "no answer rule that ignores the image" if balance != "overall" else "no fixed answer"
        lines.append(f"- For scale: answering \"no\" to every question scores diagnosis accuracy {summary['always_no_accuracy']:.3f}: "
                     f"the benchmark asks as many \"no\" questions as \"yes\" ones {balance}, so {rule} scores above 0.5.")
    lines += ["", "Label F1 with each model's reports given to the exams in a random order (mean of 1,000 shuffles; p: the share of "
              "shuffles that score at least the real F1; near 0 only for a model whose reports depend on the image): "
              + "; ".join(f"{name} {v['value']:.3f} (p={v['p']:.2f})" for name, v in summary["label_f1_shuffled"].items() if v["value"] is not None)
              + "."]
    trained_with = "with" if summary["config"]["mrc"] else "without (--no-mrc)"
    lines += ["", f"Follow-up exams, the trained model ({trained_with} multi-round conversations): "
              + "; ".join(f"{k} {described(v)}" for k, v in summary["follow_up"].items()) + ".",
              f"Compare with a run {'with `--no-mrc`' if summary['config']['mrc'] else 'without `--no-mrc`'} (docs/demo.md).", ""]
    lines.append("Timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    return "\n".join(lines)


__all__ = ["DEMO_RECIPE", "DEMO_TASKS", "DemoConfig", "task_family", "token_balanced_counts", "text_length", "benchmark", "described", "described_difference", "more_questions", "on_datasets", "rebase", "run_demo", "scaled_counts", "stage_datasets", "stage_sizes", "summary_markdown"]
