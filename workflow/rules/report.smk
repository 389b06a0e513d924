# The study report, last in the DAG: one self-contained HTML page (index.html, images embedded,
# so the file alone can be mailed), the score table as CSV and Markdown, and the figures.
# Its params are the report-only config slice and its inputs include the report's own code, so
# editing a description, a reference accuracy or report.py reruns this job and nothing else.


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            LAYOUT.report_outputs()["html"],
            caption="../report/index.rst",
            category="Study report",
            labels={"file": "index.html"},
        ),
        scores_csv=report(
            LAYOUT.report_outputs()["scores_csv"],
            caption="../report/scores.rst",
            category="Score thus far",
            labels={"file": "scores.csv"},
        ),
        scores_md=LAYOUT.report_outputs()["scores_md"],
        curves=report_figures("learning_curves", "../report/learning_curves.rst", "Learning curves"),
        overfitting=report_figures("overfitting", "../report/overfitting.rst", "Overfitting"),
        pareto=report_figures("pareto", "../report/pareto.rst", "Cost and accuracy"),
    log:
        LAYOUT.log("report"),
    conda:
        "../../envs/afternoon.yaml"
    params:
        settings=report_settings,
        paths=report_paths,
    shell:
        "python -m afternoon.cli report --settings {params.settings:q} --paths {params.paths:q} > {log} 2>&1"
