"""BLEU and CIDEr-D as defined by the COCO caption evaluation (Papineni et al. 2002; Vedantam
et al. 2015) and a tokenizer that imitates the toolkit's: the fallback scorer of the caption
metric where the COCO caption toolkit cannot run (it needs Java; see ``caption_toolkit``).
BLEU and CIDEr are pure counting, so on the same tokens they give the toolkit's numbers.

Both take ``refs: {id: [reference strings]}`` and ``hyps: {id: candidate string}``.
"""
import math
import re
from collections import Counter
from typing import Dict, List, Sequence, Tuple

# What the toolkit's PTB tokenizer (Stanford CoreNLP 3.4.1, lower-cased, punctuation tokens then
# dropped) does to ordinary captions, rule by rule:
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}  # kept as words
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "wanna": ("wan", "na"), "gotta": ("got", "ta")}
_TITLES = "mr|mrs|ms|dr|st|jr|sr|vs|prof|mt"
_TOKEN = re.compile(
    r"(?:[^\W\d_]\.){2,}"                     # initialisms keep their periods: "u.s.", "e.g."
    rf"|(?:{_TITLES})\.(?=\s|$)"              # titles too: "mr."
    r"|\d+(?:[.,:]\d+)+"                      # numbers stay whole: "3.50", "1,000", "10:30"
    r"|[^\W_]+(?:(?:[-/]|'(?=[^\W_]))[^\W_]+)*"  # words, any script, hyphen/slash/apostrophe inside
    r"|[$%#&@*+=<>^~|]"                         # symbols are words of their own ("$", "%")
)  # anything else is punctuation, which the toolkit drops
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def tokenize(text: str) -> List[str]:
    """Lower-cased PTB-style tokens without punctuation, as the COCO caption toolkit produces
    them: contractions split ("don't" → "do", "n't"; "man's" → "man", "'s"), hyphenated words
    and numbers kept whole, letters of any script kept, brackets become "-lrb-" etc.

    Remaining differences from the Stanford tokenizer, all rare in captions: abbreviations other
    than initialisms and common titles ("approx.") lose their period, a word glued to a symbol
    ("@home") is split, and quoted "'n'" loses its quotes.
    """
    text = text.lower()
    for bracket, word in _BRACKETS.items():
        text = text.replace(bracket, f" {word} ")
    tokens = []
    for chunk in text.split():
        if chunk in _BRACKETS.values():
            tokens.append(chunk)
            continue
        for token in _TOKEN.findall(chunk):
            if token in _SPLIT_WORDS:
                tokens.extend(_SPLIT_WORDS[token])
                continue
            clitic = _CLITIC.match(token)
            tokens.extend(clitic.groups() if clitic else (token,))
    return tokens


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(refs: Dict, hyps: Dict, max_n: int = 4) -> List[float]:
    """Corpus BLEU-1..max_n: clipped n-gram precisions summed over the corpus, geometric mean,
    brevity penalty with the closest reference length (ties → the shorter one), as the COCO
    caption toolkit computes it (same numbers as ``pycocoevalcap``)."""
    correct = [0] * max_n
    guessed = [0] * max_n
    hyp_len = ref_len = 0
    for key, hyp in hyps.items():
        h = tokenize(hyp)
        rs = [tokenize(r) for r in refs[key]]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(h, n)
            max_ref = Counter()
            for r in rs:
                for gram, c in ngrams(r, n).items():
                    max_ref[gram] = max(max_ref[gram], c)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            guessed[n - 1] += max(len(h) - n + 1, 0)
    # The COCO caption toolkit's smoothing and arithmetic, kept so that the numbers are the same
    # to the last bits: a corpus without any matching 4-gram scores ~1e-5, not exactly 0, and
    # the length ratio carries the same small offsets (a hypothesis exactly as long as its
    # references gets a brevity factor of exp(-1e-9 / length), not 1).
    tiny, small = 1e-15, 1e-9
    ratio = (hyp_len + tiny) / (ref_len + small)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (correct[n] + tiny) / (guessed[n] + small)
        scores.append(product ** (1.0 / (n + 1)) * brevity)
    return scores


def _tfidf(counts: List[Counter], doc_freq: Counter, log_num_docs: float) -> Tuple[List[Dict], List[float], int]:
    """Per n: tf-idf vector, its norm, and the sentence length (number of unigrams)."""
    vectors, norms = [], []
    for counter in counts:
        vec = {g: tf * (log_num_docs - math.log(max(1.0, doc_freq[g]))) for g, tf in counter.items()}
        vectors.append(vec)
        norms.append(math.sqrt(sum(v * v for v in vec.values())))
    return vectors, norms, sum(counts[0].values())


def cider_d(refs: Dict, hyps: Dict, max_n: int = 4, sigma: float = 6.0) -> Tuple[float, Dict]:
    """CIDEr-D: tf-idf n-gram cosine with clipped candidate weights and a Gaussian length
    penalty, averaged over n = 1..4 and the references, times 10. Document frequencies come
    from the references of the evaluated set. Returns (corpus score, per-id scores)."""
    keys = list(hyps)
    ref_counts = {k: [[ngrams(tokenize(r), n) for n in range(1, max_n + 1)] for r in refs[k]] for k in keys}
    doc_freq: Counter = Counter()
    for k in keys:
        doc_freq.update({g for ref in ref_counts[k] for counter in ref for g in counter})
    log_num_docs = math.log(float(len(keys))) if keys else 0.0
    per_id = {}
    for k in keys:
        hyp_tokens = tokenize(hyps[k])
        h_vec, h_norm, h_len = _tfidf([ngrams(hyp_tokens, n) for n in range(1, max_n + 1)], doc_freq, log_num_docs)
        total = 0.0
        for ref in ref_counts[k]:
            r_vec, r_norm, r_len = _tfidf(ref, doc_freq, log_num_docs)
            penalty = math.exp(-((h_len - r_len) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                dot = sum(min(v, r_vec[n].get(g, 0.0)) * r_vec[n].get(g, 0.0) for g, v in h_vec[n].items())
                if h_norm[n] and r_norm[n]:
                    total += dot / (h_norm[n] * r_norm[n]) * penalty
        per_id[k] = total / max_n / max(1, len(ref_counts[k])) * 10.0
    score = sum(per_id.values()) / len(per_id) if per_id else 0.0
    return score, per_id
