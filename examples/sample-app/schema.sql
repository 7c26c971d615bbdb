-- The sample app's table and 200 made-up patients (no real person's data).
-- Deterministic: the same rows every time it is loaded, so a checksum taken before a disaster can be
-- compared with the restored database's.
--   psql -v ON_ERROR_STOP=1 -1 -f schema.sql "host=127.0.0.1 dbname=mavis user=mavis"

CREATE TABLE patients (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    born date,
    notes jsonb,
    updated_at timestamptz DEFAULT now()
);

INSERT INTO patients (id, name, born, notes, updated_at)
SELECT
    i,
    (ARRAY['Ada', 'Bram', 'Chloé', 'Dmitri', 'Esther', 'Farid', 'Greta', 'Hiro', 'Inès', 'Jonas', 'Kwame',
           'Lucía', 'Mavis', 'Nils', 'Olga', 'Priya', 'Quentin', 'Rosa', 'Søren', 'Tomasz', 'Uma', 'Víctor',
           'Wanjiru', 'Xu', 'Yusuf', 'Zoë'])[1 + i % 26]
        || ' ' ||
    (ARRAY['Okafor', 'Lindqvist', 'García', 'Nguyễn', 'O''Brien', 'Kowalski', 'Haddad', 'Tanaka', 'Müller',
           'Dubois', 'Rossi', 'Ødegård', 'Patel', 'Smith', 'Ivanova', 'Mensah', 'Fernández', 'Kim', 'Novak',
           'MacLeod', 'Costa', 'Andersen', 'Yılmaz'])[1 + (i * 7) % 23],
    CASE WHEN i % 17 = 0 THEN NULL ELSE date '1931-01-01' + (i * 7919) % 33000 END,
    CASE WHEN i % 11 = 0 THEN NULL
         ELSE jsonb_build_object(
             'ward', (ARRAY['cardiology', 'oncology', 'maternity', 'orthopaedics', 'neurology', 'A&E'])[1 + i % 6],
             'blood_type', (ARRAY['O+', 'A+', 'B+', 'AB+', 'O-', 'A-', 'B-', 'AB-'])[1 + (i * 3) % 8],
             'allergies', CASE i % 5 WHEN 0 THEN '[]'::jsonb WHEN 1 THEN '["penicillin"]'::jsonb
                                     WHEN 2 THEN '["latex", "peanuts"]'::jsonb ELSE '["none known"]'::jsonb END,
             'visits', 1 + (i * 13) % 40,
             'discharged', i % 4 = 0,
             'remark', CASE WHEN i % 9 = 0 THEN E'follow-up in 6 weeks;\nbring "previous" scans' END)
    END,
    timestamptz '2024-01-01 08:00:00+00' + i * interval '3 hours 17 minutes 11.5 seconds'
FROM generate_series(1, 200) AS i;
