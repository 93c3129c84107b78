"""experiments/reproduce.py's machinery: the run plan and reuse (jobs, paper_runs), tables, figures, READMEs."""
