"""kneelib.data.paper: a copy of the paper's data set (Chen 2018) checked against its manifest, made into its layout.

One chain, each module importing only those before it:

- :mod:`~kneelib.data.paper.manifest` — the packaged manifest of all 8,260 crops (``assets/``) and how it was made;
- :mod:`~kneelib.data.paper.pixel_check` — what differs in a file with a paper name but other bytes (CLAHE?);
- :mod:`~kneelib.data.paper.report` — the comparison's records (:class:`VerifyReport`) and its words (verdict,
  advice, the text report);
- :mod:`~kneelib.data.paper.verify` — ``kneelib data verify``: every file of a folder matched with the manifest;
- :mod:`~kneelib.data.paper.prepare` — ``kneelib data prepare``: a variant turned into the paper's layout.

The modules are imported where used (``from kneelib.data.paper.verify import verify``); ``kneelib.data`` re-exports
:func:`~kneelib.data.paper.verify.verdict_line`.
"""

__all__ = ["manifest", "pixel_check", "prepare", "report", "verify"]
