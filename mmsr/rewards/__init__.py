"""The reward of MMSearch-R1 (paper §2.4) as pure functions. No torch.

``score = (1 - format_weight) * accuracy * penalty + format_weight * format_score``:

* ``accuracy``: the last ``<answer>`` of the last assistant turn against the gold answers,
  after SQuAD-style normalisation; modes ``em`` (default), ``subem``, ``f1`` or ``judge``.
* ``penalty``: ``1 - search_penalty`` when the answer earns accuracy and any search was made
  (or once per search with ``penalty_per_search``); wrong answers are not penalised further.
* ``format_score``: 1 when every turn is well formed and the actions run answer,
  image→answer, text→answer or image→text→answer.

On the original release's inputs this gives its values (1.0 / 0.91 / 0.1 / 0.9 / 0.81 / 0),
with one deliberate difference: a search in the *last* of several turns is counted too (the
original counted only the earlier turns; such a trajectory is never well formed anyway). And
it never raises on odd input: empty or ``None`` turns, non-string golds, four or more turns.
``RewardConfig`` holds the settings (mode, penalty, format weight) as the one config section
every entry point composes and passes down here. The commands that score with it
(``mmsr reward``, ``mmsr walkthrough``) are in ``mmsr.rewards.cli``.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mmsr.protocol.actions import contains_search, extract_answer, well_formed_kind
from mmsr.types import ActionKind, RewardBreakdown

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

# The action sequences that earn the format reward (paper Table 3).
VALID_SEQUENCES: frozenset[tuple[ActionKind, ...]] = frozenset(
    {
        (ActionKind.ANSWER,),
        (ActionKind.IMAGE_SEARCH, ActionKind.ANSWER),
        (ActionKind.TEXT_SEARCH, ActionKind.ANSWER),
        (ActionKind.IMAGE_SEARCH, ActionKind.TEXT_SEARCH, ActionKind.ANSWER),
    }
)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, drop ASCII punctuation and a/an/the, collapse spaces.

    >>> normalize_answer("  The Eiffel-Tower! ")
    'eiffeltower'
    """
    if not isinstance(s, str):
        s = "" if s is None else str(s)
    s = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _gold_list(golds: object) -> list[str]:
    """Golds as a list of strings: one string, or any iterable; ``None`` entries dropped."""
    if golds is None:
        return []
    if isinstance(golds, str | int | float):
        return [str(golds)]
    if isinstance(golds, Iterable):
        return [g if isinstance(g, str) else str(g) for g in golds if g is not None]
    return [str(golds)]


def exact_match(pred: str, golds: str | Sequence[str]) -> bool:
    """Whether the normalised prediction equals any normalised gold.

    >>> exact_match("the Paris", ["paris", "Lutetia"])
    True
    """
    if pred is None:
        return False
    norm = normalize_answer(pred)
    return any(norm == normalize_answer(g) for g in _gold_list(golds))


def substring_match(pred: str, golds: str | Sequence[str]) -> bool:
    """Whether any normalised gold is a substring of the normalised prediction.

    An empty gold matches nothing (it would match every prediction).

    >>> substring_match("It is Paris, France", ["paris"])
    True
    """
    if pred is None:
        return False
    norm = normalize_answer(pred)
    for gold in _gold_list(golds):
        ngold = normalize_answer(gold)
        if ngold and ngold in norm:
            return True
    return False


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, golds: str | Sequence[str]) -> float:
    """SQuAD v1.1 token F1 between the prediction and the best gold.

    >>> round(token_f1("Paris France", ["Paris"]), 3)
    0.667
    """
    if pred is None:
        return 0.0
    pred_tokens = normalize_answer(pred).split()
    return max(
        (_f1(pred_tokens, normalize_answer(g).split()) for g in _gold_list(golds)), default=0.0
    )


class AnswerJudge(Protocol):
    """Decides whether a prediction answers the question as the golds do (e.g. an LLM judge,
    ``mmsr.rewards.judge``); ``image`` is the question's image, for judges that look at it."""

    def judge(
        self, question: str, prediction: str, golds: Sequence[str], image: Any = None
    ) -> bool: ...


# Accuracy modes that need no judge: prediction, golds -> accuracy in [0, 1].
ACCURACY_MODES: dict[str, Callable[[str, Sequence[str]], float]] = {
    "em": lambda p, g: float(exact_match(p, g)),
    "subem": lambda p, g: float(substring_match(p, g)),
    "f1": token_f1,
}
REWARD_MODES = (*ACCURACY_MODES, "judge")


@dataclass(frozen=True)
class RewardConfig:
    """The reward's settings, one section of every config that scores (GRPO, SFT, eval, veRL).

    Its fields are ``score_trajectory``'s keyword arguments, so
    ``score_trajectory(turns, golds, **asdict(reward))`` scores with them.
    """

    mode: str = "em"
    """Accuracy measure: one of ``REWARD_MODES`` (``judge`` also needs a judge)."""
    search_penalty: float = 0.1
    """Share taken off a correct answer's reward when it searched (paper §2.4)."""
    format_weight: float = 0.1
    """α, the weight of the format reward."""
    penalty_per_search: bool = False
    """Apply the penalty once per search instead of once per trajectory."""
    judge_endpoint: str | None = None
    """The judge of mode ``judge`` as ``BASE_URL#MODEL`` (``mmsr.rewards.judge.score_many``;
    the paper's judge style, key in ``OPENAI_API_KEY``)."""

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"unknown reward mode {self.mode!r}; expected one of {REWARD_MODES}")


def format_score(turns: Sequence[str]) -> float:
    """1.0 when every turn is well formed and the action sequence is a valid one, else 0.0."""
    kinds = tuple(well_formed_kind(t) for t in turns)
    return 1.0 if kinds in VALID_SEQUENCES else 0.0


def search_count(turns: Sequence[str]) -> int:
    """Number of turns that contain a search action."""
    return sum(contains_search(t) for t in turns)


def _accuracy(
    answer: str, golds: list[str], mode: str, question: str, judge: AnswerJudge | None
) -> tuple[float, str | None]:
    if mode != "judge":
        return ACCURACY_MODES[mode](answer, golds), None
    assert judge is not None
    try:
        return float(bool(judge.judge(question, answer, golds))), None
    except Exception as err:  # the judge is outside world: its failure is recorded, not raised
        logger.warning("answer judge failed: %s", err)
        return 0.0, f"judge failed: {type(err).__name__}: {err}"


def score_trajectory(
    turns: Sequence[str] | None,
    golds: str | Sequence[str] | None,
    *,
    mode: str = RewardConfig.mode,
    search_penalty: float = RewardConfig.search_penalty,
    format_weight: float = RewardConfig.format_weight,
    penalty_per_search: bool = RewardConfig.penalty_per_search,
    judge_endpoint: str | None = None,
    judge: AnswerJudge | None = None,
    question: str = "",
    bare_answer: bool = False,
) -> RewardBreakdown:
    """Reward one trajectory from its assistant turn texts.

    ``mode`` and ``judge`` are configuration: an unknown mode, or ``mode="judge"`` without a
    judge, raises ``ValueError``. Any trajectory or gold input, however odd, gets a reward.
    ``judge_endpoint`` is where ``judge`` comes from (``RewardConfig``); it is not read here.
    ``bare_answer``: a last turn without ``<answer>`` is the answer as a whole (the paper's
    untagged baselines).

    >>> score_trajectory(["Paris"], ["paris"], bare_answer=True).accuracy
    1.0

    >>> score_trajectory(["<reason>r</reason><answer>Paris</answer>"], ["Paris"]).score
    1.0
    """
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {REWARD_MODES}")
    if mode == "judge" and judge is None:
        raise ValueError("reward mode 'judge' needs a judge")
    texts = [t if isinstance(t, str) else "" for t in (turns or [])]
    gold_list = _gold_list(golds)
    answer = extract_answer(texts[-1]) if texts else None
    if answer is None and bare_answer and texts:
        answer = texts[-1].strip() or None
    accuracy, error = 0.0, None
    if answer is not None and gold_list:
        accuracy, error = _accuracy(answer, gold_list, mode, question, judge)
    n_search = search_count(texts)
    fmt = format_score(texts)
    penalty = 1.0
    if n_search > 0 and accuracy > 0:
        penalty = (1 - search_penalty) ** (n_search if penalty_per_search else 1)
    score = (1 - format_weight) * (accuracy * penalty) + format_weight * fmt
    return RewardBreakdown(
        score=score,
        accuracy=accuracy,
        format_score=fmt,
        search_count=n_search,
        answer=answer,
        error=error,
        penalty=penalty,
    )
