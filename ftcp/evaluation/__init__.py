"""Evaluation of FTCP / SSL feature tables: the three downstream scenarios of the paper.

Array-level pieces (``metrics``, ``timing``, ``linear``, ``mlp``, ``attribution``,
``residual``) work on plain numpy arrays; ``features`` assembles ID-aligned feature
tables from a data store; ``results``, ``plots`` and ``report`` turn scenario outputs
into JSON, figures and ``RESULTS.md``.  Heavy optional imports (torch, shap, matminer,
matplotlib) happen inside the modules that need them, never here.
"""
