"""The hybrid ranking, pinned on hand-made cases (the figures live in bench/retrieval.py)."""

from __future__ import annotations

from typing import Literal

import pytest

from bot.contract import ScoreParts
from bot.domain import Article
from bot.pipeline import ranking


def wiki(title: str, text: str, rank: int = 0) -> Article:
    return Article("wikipedia", title, f"https://en.wikipedia.org/wiki/{title}", text, rank)


def story(title: str, rank: int = 0) -> Article:
    return Article("hackernews", title, f"https://news.ycombinator.com/item?id={rank}", title, rank)


PLANET = wiki("Mercury (planet)", "Mercury is the smallest planet and orbits nearest the Sun.", 1)
METAL = wiki(
    "Mercury (element)", "Mercury is a metal, liquid at room temperature, in thermometers."
)
GOD = wiki("Mercury (mythology)", "Mercury is the Roman messenger god of merchants.", 2)


def test_terms_drop_stopwords_and_fold_plurals() -> None:
    assert ranking.terms("What are the planets of the Solar System?") == [
        "planet",
        "solar",
        "system",
    ]
    assert ranking.terms("Batteries and bus") == ["battery", "bus"]


@pytest.mark.parametrize(
    "forms",
    [
        ("dance", "dances", "danced", "dancing"),
        ("misfire", "misfires", "misfired"),
        ("run", "runs", "running"),
        ("fall", "falls", "falling"),
        ("fly", "flies", "flying"),
        ("name", "names", "named"),
        ("class", "classes"),
    ],
)
def test_a_word_s_inflections_meet(forms: tuple[str, ...]) -> None:
    assert len({ranking.stem(f) for f in forms}) == 1, [ranking.stem(f) for f in forms]


@pytest.mark.parametrize(
    ("word", "other"), [("singer", "sing"), ("thread", "three"), ("status", "state"), ("red", "re")]
)
def test_derivations_and_short_words_stay_apart(word: str, other: str) -> None:
    assert ranking.stem(word) != ranking.stem(other)


def test_an_inflected_word_tells_neighbours_apart() -> None:
    bird = wiki("Crane (bird)", "Cranes are long-necked birds known for their dancing displays.")
    machine = wiki("Crane (machine)", "A crane is a machine; tower cranes lift heavy loads.")
    scores = ranking.bm25(ranking.terms("why do cranes dance?"), [bird, machine])
    assert scores[0] > scores[1]


def test_bm25_rewards_the_distinguishing_word_not_the_shared_one() -> None:
    scores = ranking.bm25(ranking.terms("mercury thermometer"), [PLANET, METAL, GOD])
    assert scores[1] > 4 * max(scores[0], scores[2])
    # "mercury" is in every candidate: it adds almost nothing.
    shared = ranking.bm25(["mercury"], [PLANET, METAL, GOD])
    assert max(shared) < scores[1] / 4


def test_bm25_weights_the_title_over_the_intro() -> None:
    in_title = wiki("Spark plug", "A device in petrol engines.")
    in_text = wiki("Engine", "A petrol engine needs a plug to ignite the fuel.")
    scores = ranking.bm25(["plug"], [in_title, in_text])
    assert scores[0] > scores[1] > 0


def test_rrf_adds_reciprocal_ranks_with_the_prior_weak() -> None:
    parts = [
        ScoreParts(dense=0.9, bm25=0.0, prior=1.0, source_rank=0),
        ScoreParts(dense=0.5, bm25=3.0, prior=0.5, source_rank=1),
        ScoreParts(dense=0.1, bm25=1.0, prior=1 / 3, source_rank=2),
    ]
    k, w = ranking.RRF_K, ranking.RRF_WEIGHTS
    scores = ranking.rrf(parts)
    assert scores[0] == pytest.approx(
        w["dense"] / (k + 1) + w["bm25"] / (k + 3) + w["prior"] / (k + 1)
    )
    assert scores[1] == pytest.approx(
        w["dense"] / (k + 2) + w["bm25"] / (k + 1) + w["prior"] / (k + 2)
    )
    # First in one ranker and second in the other beats first in one and last in the other.
    assert scores[1] > scores[0] > scores[2]


def test_the_search_engine_s_order_does_not_outvote_the_question_s_meaning() -> None:
    # "can a spark from a power line start a wildfire?" searched on its own words: the
    # search puts "Wildfire" first and its words match a little better, but the question
    # is about the spark, and the embedding says so. The source's order only breaks ties.
    spark = ScoreParts(dense=0.62, bm25=2.4, prior=0.25, source_rank=3)
    wildfire = ScoreParts(dense=0.55, bm25=2.96, prior=1.0, source_rank=0)
    scores = ranking.rrf([spark, wildfire])
    assert scores[0] > scores[1]
    tied = ranking.rrf([ScoreParts(dense=0.5, bm25=1.0, source_rank=r) for r in (1, 0)])
    assert tied[1] > tied[0]


def test_rrf_ties_share_the_better_rank() -> None:
    parts = [ScoreParts(dense=0.5), ScoreParts(dense=0.5), ScoreParts(dense=0.1)]
    scores = ranking.rrf(parts, weights={"dense": 1.0, "bm25": 0.0, "prior": 0.0})
    assert scores[0] == scores[1] > scores[2]


def test_weighted_sum_normalises_bm25_by_the_turns_best() -> None:
    parts = [
        ScoreParts(dense=0.40, bm25=8.0, prior=1.0),
        ScoreParts(dense=0.55, bm25=2.0, prior=0.5),
    ]
    w = ranking.SUM_WEIGHTS
    scores = ranking.weighted(parts)
    assert scores[0] == pytest.approx(w["dense"] * 0.40 + w["bm25"] * 1.0 + w["prior"] * 1.0)
    assert scores[1] == pytest.approx(w["dense"] * 0.55 + w["bm25"] * 0.25 + w["prior"] * 0.5)
    # The same BM25 scores scaled up change nothing: only the turn's proportions count.
    scaled = [ScoreParts(dense=p.dense, bm25=p.bm25 * 10, prior=p.prior) for p in parts]
    assert ranking.weighted(scaled) == pytest.approx(scores)


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_lexical_evidence_overrules_a_misleading_dense_score(
    fusion: Literal["rrf", "weighted"],
) -> None:
    # Dense prefers the planet (its wording), the words say thermometer: the metal wins.
    ranked = ranking.rank(
        [PLANET, METAL, GOD],
        [0.62, 0.55, 0.30],
        ranking.terms("mercury in my thermometer"),
        fusion=fusion,
    )
    assert ranked[0].article.title == "Mercury (element)"
    top = ranked[0]
    assert top.parts.dense == 0.55 and top.parts.bm25 > 0 and top.parts.source_rank == 0
    assert top.score == max(r.score for r in ranked)


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_a_disambiguation_page_never_wins(fusion: Literal["rrf", "weighted"]) -> None:
    listing = wiki("Mercury (disambiguation)", "Mercury may refer to: a planet, a metal, a god.")
    unmarked = wiki("Mercury", "Mercury can refer to several things: the planet, the metal.")
    ranked = ranking.rank(
        [listing, unmarked, PLANET],
        [0.99, 0.98, 0.2],
        ["mercury", "planet", "metal"],
        fusion=fusion,
    )
    assert ranked[0].article is PLANET
    assert {r.article.title for r in ranked[1:]} == {"Mercury", "Mercury (disambiguation)"}


def test_stories_compete_but_never_crowd_out_articles() -> None:
    stories = [story(f"Mercury story {i}", i) for i in range(4)]
    articles = [PLANET, METAL, GOD]
    dense = [0.9, 0.89, 0.88, 0.87, 0.3, 0.2, 0.1]
    ranked = ranking.rank([*stories, *articles], dense, ["mercury"])
    kinds = [r.article.source for r in ranked]
    # The best story still comes first; then no prefix holds more than 40% stories.
    assert kinds[0] == "hackernews"
    last_article = max(i for i, kind in enumerate(kinds) if kind == "wikipedia")
    for length in range(2, last_article + 2):
        assert kinds[:length].count("hackernews") <= max(1, int(0.4 * length))
    # Once the articles run out, the remaining stories follow.
    assert kinds[-1] == "hackernews" and len(ranked) == 7


def test_without_dense_scores_bm25_and_the_prior_still_rank() -> None:
    ranked = ranking.rank([PLANET, METAL, GOD], [0.0, 0.0, 0.0], ["roman", "god"])
    assert ranked[0].article is GOD
