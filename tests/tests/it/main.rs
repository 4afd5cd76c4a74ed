//! Black-box tests over a real nats-server and PostgreSQL. One binary, so the servers start
//! once per run; each test has its own NATS account and databases (see `shop_tests`).

mod cli;
mod goods;
mod order;
mod stock;
