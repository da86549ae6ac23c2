"""The code that runs inside the sandbox, and only there: it imports the student's model.

Run as ``python -m grader.inside JOB.json``. It reads the job (``grader.protocol.HarnessJob``),
imports the student's code, builds and counts the model, then either evaluates the submitted
weights or retrains the model from fresh weights, and writes logits for the unlabeled test
images. Everything it learns goes to ``<out>/report.json`` (a ``HarnessReport``, rewritten
after each stage, so a later crash keeps what came before) and ``<out>/logits.npy``. It never
sees a test label and computes no score.

  harness.py    the entry point: reads the job, runs the stages, seals the report
  channel.py    the report channel (report.json, logits.npy) and StageFailure
  loading.py    importing the student's module and building the model
  stages.py     evaluation of submitted weights: build, count, load weights, infer
  training.py   retraining of the student's model under a recipe
  weights.py    loading a state_dict without trusting it
  counting.py   parameters, MACs per counter, layer table, diagram blocks
  inference.py  logits for a batch of uint8 images: the one inference function
  engine.py     the training engine; augment.py and layout.py are its parts
  reaper.py     every process the student's code started ends before the last word

Import contract (tests/test_imports.py, and lint-imports in CI): modules here import only
each other, ``grader.protocol`` and ``grader.files``; no host module imports this package.
"""
