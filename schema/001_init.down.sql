DROP TABLE events;
DROP TABLE agents;
DROP TABLE nodes;
DROP TABLE expressions;
DROP TABLE operation_durations;
DROP TABLE refresh_tokens;
DROP TABLE users;
