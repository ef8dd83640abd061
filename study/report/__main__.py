"""``python -m study.report --study NAME``: rebuild a study's report from MLflow into its results folder (the CLI
lives with the publishing, study.publish)."""

from study.publish import main

if __name__ == "__main__":
    main()
