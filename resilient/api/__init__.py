"""What users write against: the @job decorator and its registry, the Context a job gets, the Client and
the JobHandle an enqueue returns."""
