"""Caption scores from the COCO caption evaluation toolkit (``pycocoevalcap``), the numbers papers
publish: PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr-D. SPICE is left out (it needs
Stanford CoreNLP models downloaded at first use).

The tokenizer and METEOR are Java programs the toolkit runs as subprocesses; without ``java`` on
the PATH (or without the package) :func:`toolkit_unavailable` says why, and the caption metric
falls back to its own scorer (``caption_scores``).
"""
import shutil
from typing import Dict, Optional

SCORER_NAME = "COCO caption toolkit (pycocoevalcap: PTB tokenizer on Java, BLEU, METEOR, ROUGE-L, CIDEr-D)"


def toolkit_unavailable() -> Optional[str]:
    """None when the toolkit can run here, otherwise the reason it cannot."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return "pycocoevalcap is not installed"
    if shutil.which("java") is None:
        return "no java on the PATH"
    return None


def _one_line(text: str) -> str:
    # The toolkit joins all captions with newlines and reads one line back per caption, so any
    # other line break inside a caption ("\r", "\u2028", ...) would shift every later caption.
    return " ".join(text.splitlines())


def ptb_tokenize(captions: Dict[object, list]) -> Dict[object, list]:
    """``{id: [caption]}`` → ``{id: [tokenized caption]}`` through the toolkit's PTB tokenizer
    (lower-cased tokens joined by spaces, punctuation removed)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tokenized = PTBTokenizer().tokenize({k: [{"caption": _one_line(c)} for c in v] for k, v in captions.items()})
    # A java that fails prints nothing, and the toolkit would silently score what is left.
    expected = sum(len(v) for v in captions.values())
    got = sum(len(v) for v in tokenized.values())
    if got != expected or tokenized.keys() != captions.keys():
        raise RuntimeError(f"the PTB tokenizer (java) returned {got} of {expected} captions")
    return tokenized


def _meteor(gts: dict, res: dict) -> float:
    """METEOR; its Java process is always ended here (the toolkit only ends it on garbage
    collection, and would wait forever on its own lock if scoring had failed half way)."""
    from pycocoevalcap.meteor.meteor import Meteor
    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    finally:
        if meteor.lock.locked():
            meteor.lock.release()
        process = meteor.meteor_p
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        process.kill()
        process.wait()
    return float(score)


def coco_toolkit_scores(refs: Dict, hyps: Dict) -> Dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (CIDEr-D; fractions, not percent) of ``hyps:
    {id: caption}`` against ``refs: {id: [captions]}``, computed by the toolkit exactly as its
    own ``COCOEvalCap`` does (the same tokenizer and scorers, on the ids of ``hyps``)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    gts = ptb_tokenize({k: list(refs[k]) for k in hyps})
    res = ptb_tokenize({k: [hyps[k]] for k in hyps})
    bleus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleus)}
    scores["METEOR"] = _meteor(gts, res)
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores
