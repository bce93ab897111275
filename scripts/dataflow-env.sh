#!/usr/bin/env bash
# Shared settings of the Dataflow scripts; every value can be overridden from the environment.
: "${PROJECT:?set PROJECT to your Google Cloud project id}"
: "${REGION:=europe-west1}"
: "${REPOSITORY:=kappaflow}"                      # Artifact Registry (docker) repository
: "${BUCKET:?set BUCKET to a Cloud Storage bucket for templates and temp files (no gs://)}"
: "${TAG:=$(git rev-parse --short HEAD 2>/dev/null || echo latest)}"
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/kappaflow:${TAG}}"
TEMPLATES="gs://${BUCKET}/templates/${TAG}"
export PROJECT REGION REPOSITORY BUCKET TAG IMAGE TEMPLATES
