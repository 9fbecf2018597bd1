"""What a request body is, what a response carries, what is exempt, how a refusal is written."""
