"""Training wing: one architecture trained on one dataset, on the TensorFlow side of a job.

- ``loop``: ``train()``, the whole recipe (input pipeline, callbacks, fit, summary), resumable;
- ``models``: the zoo's Keras 2 models and optimizers;
- ``callbacks``: the Keras callbacks (epoch recorder, resumable early stopping, epoch checkpoint,
  the data-parallel warm-up and statistics, the profile of training.profile_batches);
- ``checkpoint``: epoch checkpoints, so a stopped job resumes where it stopped;
- ``schedules``: learning-rate schedules per step (cosine, one cycle);
- ``precision``: which precision a job computes in, and why; float16's loss scaling;
- ``fused_adam``: Adam's update by TensorFlow's fused kernel.

Nothing here reads the zoo file: a job's spec (``config.job_spec``) carries what it needs.
"""
