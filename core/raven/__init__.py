"""RAVEN-style Raven's Progressive Matrices, generated from a seed (spec:
RAVEN, Zhang et al. 2019; I-RAVEN, Hu et al. 2021; written from the facts, not the GPL code).

One module per concept:

- ``attributes``: value sets (type, size, color, angle), rule/attribute ids, subsets/domains
  and the rule regimes of the task families (``core.tasks``)
- ``configurations``: the 7 configurations, their components and slot boxes
- ``rules``: the four rule types, sampled row-wise per attribute group and component
- ``answers``: candidate sets, ``iraven`` (bisection tree, unbiased) and ``raven`` (biased)
- ``render``: anti-aliased signed-distance rendering to uint8 panels at any size % 16 == 0
- ``generate``: one problem per seed ``(seed, configuration, subset, index)``, worker pool
- ``check``: an independent rule checker over the stored metadata
- ``store``: packed shards and public per-problem ``.npz`` files, atomic writes
- ``build``: the data set of a profile (``python -m core.raven build``)
- ``__main__``: the command line (``generate``, ``build``, ``show``, ``check``)
"""
