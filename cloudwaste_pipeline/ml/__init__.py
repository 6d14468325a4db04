"""The models. scikit-learn, skops and scipy are imported inside the functions that use them:
the code location imports these modules in every run and step process, and at load those
libraries would cost more than Dagster itself (``test_import_cost``, ``benchmarks.import_cost``).
"""
