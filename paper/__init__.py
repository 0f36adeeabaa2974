"""The paper stage: the report's numbers and results text generated from the metrics
(:mod:`paper.numbers`) and the LaTeX build (:mod:`paper.build`, ``python -m paper``)."""
