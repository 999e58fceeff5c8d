"""English word forms shared by the data generators, the caption metrics and the decoding
constraints: the plural of a noun phrase (and back), the indefinite article, counted phrases and lists."""

IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children",
                     "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                     "scissors": "scissors", "glasses": "glasses", "leaf": "leaves", "shelf": "shelves"}


def plural(phrase: str) -> str:
    """English plural of the last word of ``phrase`` ("red star" -> "red stars"; irregular
    table, then -es / -ies / -s)."""
    *head, word = phrase.split(" ")
    if word in IRREGULAR_PLURALS:
        word = IRREGULAR_PLURALS[word]
    elif word.endswith(("s", "x", "z", "ch", "sh")):
        word += "es"
    elif len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        word = word[:-1] + "ies"
    else:
        word += "s"
    return " ".join(head + [word])


def singular(phrase: str) -> str:
    """The singular of a noun phrase whose last word is a plural :func:`plural` writes ("red
    stars" -> "red star", "boxes" -> "box"); a last word it would not write is kept."""
    *head, word = phrase.split(" ")
    irregular = {many: one for one, many in IRREGULAR_PLURALS.items()}
    if word in irregular:
        word = irregular[word]
    else:
        for one in (word[:-3] + "y", word[:-2], word[:-1]):  # "berries", "boxes", "stars"
            if one and plural(one) == word:
                word = one
                break
    return " ".join(head + [word])


def article(word: str) -> str:
    """"an" before a vowel letter, else "a"."""
    return "an" if word[0] in "aeiou" else "a"


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")


def count_phrase(count: int, noun: str) -> str:
    """"a red star", "three red stars" (only the last word takes the plural; counts beyond
    twelve in digits)."""
    if count == 1:
        return f"{article(noun)} {noun}"
    number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{number} {plural(noun)}"


def join(phrases) -> str:
    """"a", "a and b", "a, b and c"."""
    phrases = list(phrases)
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
