# The study report, last in the DAG: one self-contained HTML page (results/report/index.html, images
# embedded, so the file alone can be mailed), the score table as CSV and Markdown, and the figures.
# Its params are the report-only config slice and its inputs include the report's own code, so
# editing a description, a reference accuracy or report.py reruns this job and nothing else.


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            f"{RESULTS}/report/index.html",
            caption="../report/index.rst",
            category="Study report",
            labels={"file": "index.html"},
        ),
        scores=report(
            f"{RESULTS}/report/scores.csv",
            caption="../report/scores.rst",
            category="Score thus far",
            labels={"file": "scores.csv"},
        ),
        markdown=f"{RESULTS}/report/scores.md",
        curves=report_figures("learning_curves", "../report/learning_curves.rst", "Learning curves"),
        overfitting=report_figures("overfitting", "../report/overfitting.rst", "Overfitting"),
    params:
        settings=report_settings,
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../../envs/afternoon.yaml"
    shell:
        "python -m afternoon.report --settings {params.settings:q}"
        f" --results {RESULTS} --out-dir $(dirname {{output.html}}) > {{log}} 2>&1"
