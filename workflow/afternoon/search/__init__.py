"""Search wing: hyperparameter searches (``config/searches.yaml``) run by Keras Tuner's oracles.

Without TensorFlow or Keras Tuner (the dry run, the report):
- ``grammar``: a search's keys and space, checked; a trial's architecture from its values;
- ``jobs``: what one tune job gets, and the dry run's checks of the selected searches;
- ``oracles``: Keras Tuner's oracles (imported when one is made) and Hyperband's arithmetic;
- ``state``: the state folder's names, resuming, the chief's address, the trials table's columns.

In a tune job:
- ``chief``: the job's processes: the chief serving the oracle, and its workers;
- ``trials``: one trial trained (``training.loop``), checkpointed and tracked as a child run;
- ``results``: a finished search's trials table, summary and best trial.
"""
