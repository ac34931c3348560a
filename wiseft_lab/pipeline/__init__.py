"""The pipeline: a run context built once, then ``finetune -> merge -> evaluate -> report``, each stage a function
of the context that returns what the next one takes (:mod:`.run` drives them; see the README's Architecture)."""
