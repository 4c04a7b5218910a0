"""Demo data: the MIRC regional site table, a few patients with priors at several sites."""
