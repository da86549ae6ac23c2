"""The only code that runs inside the sandbox: it imports the student's model.

Run as ``python -m grader.harness JOB.json``. It reads the job, builds the model, counts
it, loads the weights and writes logits for the unlabeled test images. Everything it
learns goes to ``<out>/report.json`` (rewritten after each stage, so a later crash keeps
what came before) and ``<out>/logits.npy``. It never sees a label and computes no score.
"""
