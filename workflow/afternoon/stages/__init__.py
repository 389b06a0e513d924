"""One module per Snakemake rule (and ``sync_tracking``, run by hand): each is the recipe that
stage runs, read top to bottom, with ``main(args)`` taking the arguments ``afternoon.cli``
parsed. No stage imports another stage or the CLI."""
