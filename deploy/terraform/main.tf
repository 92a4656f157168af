# tickflow on AWS, the serverless path: an SQS queue (with its dead-letter queue) feeding
# `tickflow lambda` through an event source mapping; trades, bars and daily metrics kept in
# DynamoDB; the processed rows as JSON for Athena on S3; alerts on an SNS topic; CloudWatch
# alarms on the dead-letter queue, the queue's backlog and the function's errors. This is the
# old pipelines' shape: ticks kept and alerts sent per message; bars and daily metrics need
# one process to see every tick of a symbol, so `tickflow run` computes those.
#
#   ../lambda/package            # builds tickflow-lambda.zip (bootstrap + tickflow.toml)
#   terraform init && terraform apply -var lambda_zip=../lambda/tickflow-lambda.zip
#
# The function's role grants only the calls tickflow makes (crates/tickflow/tests/it/deploy.rs
# compares the two); docs/scale-out.md describes the path and its guarantees.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      application = "tickflow"
      stack       = var.name
    }
  }
}

data "aws_caller_identity" "current" {}
