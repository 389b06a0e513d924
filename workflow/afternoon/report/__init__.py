"""Report wing: what the study's numbers say, for people.

- ``study``: the report stage's page: score table, learning curves, overfitting, costs, runs,
  searches, provenance;
- ``costs``: what a run ran on and what it cost (measured by the jobs), and the report's view of it
  (cost columns, Pareto front, device table);
- ``search``: the report's search sections;
- ``plots``: every figure of the pipeline, with one PNG helper (``save_png``).
"""
