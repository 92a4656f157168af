output "queue_url" {
  description = "Where producers send ticks: tickflow produce --to sqs://<name>, or SendMessage."
  value       = aws_sqs_queue.ticks.url
}

output "dead_letter_queue_url" {
  value = aws_sqs_queue.dead_letters.url
}

output "bucket" {
  description = "processed/ holds the JSON for Athena; tickflow athena-ddl prints its tables."
  value       = aws_s3_bucket.data.bucket
}

output "alerts_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "tables" {
  value = { for k, t in aws_dynamodb_table.tables : k => t.name }
}
