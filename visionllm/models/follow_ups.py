"""Follow-up questions of a conversation made self-contained, for the question readers.

"What colour is it?" after "Is there a triangle?" asks "what colour is the triangle?"; "and how
many of them are red?" after "How many stars are there?" asks "how many red stars are there?";
"what about blue ones?" after that asks "how many blue stars are there?". The readers that answer
questions through the model's own grounding and detections (``QuestionGrounding``,
``QuestionCounting``) read the self-contained form, so a follow-up is answered as the question it
stands for; the LLM still reads the conversation as it is. A follow-up whose reference cannot be
resolved (no earlier question names a thing) is read as asked.
"""
import re
from typing import Optional, Sequence

from visionllm.utils.english import plural, singular

_ASKED = re.compile(r"^(?:.*?answer the question:\s*)?(.*)$", re.IGNORECASE | re.DOTALL)
_LEAD = re.compile(r"^(?:and|so|ok|okay|then|well)\b,?\s*", re.IGNORECASE)
_THEN = re.compile(r",?\s+then\s*\?$", re.IGNORECASE)
_IT = r"(?:it|that one|this one|that|this)"
_IN_IMAGE = r"(?: in (?:the|this) (?:image|picture|photo))?"
# what an earlier question is about: a thing ("is there a red star?", "what colour is the star?")
# or things ("how many red stars are there?")
_THING = (
    re.compile(rf"\b(?:is there|do you see|can you see|can you find) (?:an?|any) ([a-z ]+?){_IN_IMAGE}\s*\?", re.IGNORECASE),
    re.compile(r"\b(?:what|which) (?:colou?r|shape|size) is the ([a-z ]+?)\s*\?", re.IGNORECASE),
    re.compile(r"\bis the ([a-z ]+?) on the (?:left|right)\b", re.IGNORECASE),
)
_THINGS = (
    re.compile(r"\bhow many ([a-z ]+?) (?:are there|can you see|do you see|are in )", re.IGNORECASE),
    re.compile(rf"\bare there any ([a-z ]+?){_IN_IMAGE}\s*\?", re.IGNORECASE),
)
_ATTRIBUTE_OF_IT = re.compile(rf"^(what|which) (colou?r|shape|size) is {_IT}\s*\?$", re.IGNORECASE)
_SIDE_OF_IT = re.compile(rf"^is {_IT} on the left or (?:on )?the right(?: side)?(?: (?:of|in) (?:the|this) "
                         rf"(?:image|picture|photo))?\s*\?$", re.IGNORECASE)
_HOW_MANY_OF_THEM_ARE = re.compile(r"^how many of (?:them|those|these) are ([a-z]+)\s*\?$", re.IGNORECASE)
_HOW_MANY_OF_THEM = re.compile(rf"^how many (?:of (?:them|those|these)|are there) (?:are there|can you see){_IN_IMAGE}\s*\?$",
                               re.IGNORECASE)
_WHAT_ABOUT = re.compile(r"^(?:what|how) about (?:the )?([a-z]+) ones\s*\?$", re.IGNORECASE)


def _question(turn: str) -> str:
    """A user turn without ``<image>``, an "Answer the question:" lead-in and a leading "and"."""
    text = _ASKED.match(turn.replace("<image>", " ").strip()).group(1).strip()
    return _LEAD.sub("", text).strip()


def _referent(question: str) -> Optional[str]:
    """The thing (singular noun phrase) a self-contained question is about, or None."""
    for pattern in _THING:
        match = pattern.search(question)
        if match is not None:
            return match.group(1).strip().lower()
    for pattern in _THINGS:
        match = pattern.search(question)
        if match is not None:
            return singular(match.group(1).strip().lower())
    return None


def self_contained_question(instruction: str, history: Optional[Sequence[dict]] = None) -> str:
    """``instruction`` (the newest user turn) as a question that needs no earlier turn, when it
    refers back and the reference resolves in ``history`` (earlier turns ``{"user",
    "assistant"}``, oldest first); else ``instruction`` unchanged."""
    if not history:
        return instruction
    question = _question(instruction)
    earlier = self_contained_question(history[-1]["user"], history[:-1])
    if _THEN.search(question):  # "how many shapes are there, then?"
        return _THEN.sub("?", question)
    match = _WHAT_ABOUT.match(question)
    if match is not None:  # the earlier question with the new word for the earlier thing's first word
        thing = _referent(_question(earlier))
        if thing is None or " " not in thing:
            return instruction
        old_word = thing.split(" ")[0]
        return re.sub(rf"\b{re.escape(old_word)}\b", match.group(1).lower(), _question(earlier), count=1)
    thing = _referent(_question(earlier))
    if thing is None:
        return instruction
    match = _ATTRIBUTE_OF_IT.match(question)
    if match is not None:
        return f"{match.group(1).lower()} {match.group(2).lower()} is the {thing}?"
    if _SIDE_OF_IT.match(question):
        return f"is the {thing} on the left or on the right?"
    if _HOW_MANY_OF_THEM.match(question):
        return f"how many {plural(thing)} are there?"
    match = _HOW_MANY_OF_THEM_ARE.match(question)
    if match is not None:  # the kind of the earlier things, of the asked colour
        return f"how many {match.group(1).lower()} {plural(thing.split(' ')[-1])} are there?"
    return instruction

