-- Reports read the daily rollups by date (`/global/spend/report`, the console's spend page):
-- every row of a range, whatever its user or team, so the (user_id, date) and (team_id, date)
-- indexes do not serve them. Without this a report scans the whole rollup table.
CREATE INDEX litellm_dailyuserspend_date_idx ON litellm_dailyuserspend (date);
