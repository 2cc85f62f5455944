"""The preset zlib dictionary for stored payloads (store format 1).

Sample observations and an alert of every kind: the keys, units, advice texts and
structure every stored payload repeats, so each row compresses to ~6-10 % of its JSON
(a 1.5 KB air observation to ~90 bytes) and the SD card is written that much less.

FROZEN: rows written with it can only be read with exactly these bytes. A better
dictionary is a new constant with a new format byte, never an edit of this one.
"""

DICTIONARY_V1 = (
    '{"v":1,"site_id":"unit-site-01","gateway_id":"gw-unit-01","device_id":"ce-000000'
    '0f0001","kind":"water","alert":"water_warning","state":"raised","severity":"warn'
    'ing","t":"2026-09-21T15:02:20Z","value":2.03,"unit":"m","threshold":2.0,"band":n'
    'ull,"message":"Water level 2.03 m MSL is above the warning level 2.00 m","messag'
    'e_th":"ระดับน้ำ 2.03 ม. สูงกว่าระดับเฝ้าระวัง 2.00 ม."}\n'
    '{"v":1,"site_id":"unit-site-01","gateway_id":"gw-unit-01","device_id":"ce-012345'
    '6789ab","kind":"parking","fw":"0.1.0","boot":3,"seq":17,"phenomenon_time":"2026-'
    '09-21T14:13:20Z","t":1790000000.0,"clock_synced":true,"received_time":"2026-09-2'
    '1T14:13:20.000Z","location":{"lat":13.0,"lon":100.0},"raw":{"occupied":{"v":true'
    ',"u":"/"},"field_delta":{"v":12.0,"u":"uT"}},"calibrated":{"occupied":{"v":true,'
    '"u":"/","calibration_id":"none"}},"quality":{"occupied":2},"derived":{"status":"'
    'occupied"},"replay":false}\n'
    '{"v":1,"site_id":"unit-site-01","gateway_id":"gw-unit-01","device_id":"ce-000000'
    '0f0001","kind":"water","fw":"0.1.0","boot":2,"seq":19,"phenomenon_time":"2026-09'
    '-21T14:32:20Z","t":1790001140.0,"clock_synced":true,"received_time":"2026-09-21T'
    '14:32:20.000Z","location":{"lat":13.0,"lon":100.0},"raw":{"distance":{"v":2.05,"'
    'u":"m"},"air_temp":{"v":30.0,"u":"Cel"}},"calibrated":{"level":{"v":2.45,"u":"m"'
    ',"calibration_id":"stage-ce-0000000f0001-2026","datum":"MSL"}},"quality":{"level'
    '":1},"quality_tests":{"level":{"gross_range":2,"spike":2,"rate_of_change":1,"fla'
    't_line":2}},"derived":{"level_state":{"state":"warning","level_m":2.45,"datum":"'
    'MSL","warning_m":2.0,"critical_m":3.0,"rate_m_per_h":3.0,"rising_fast":true}},"r'
    'eplay":false}\n'
    '{"v":1,"site_id":"unit-site-01","gateway_id":"gw-unit-01","device_id":"ce-a1b2c3'
    'd4e5f6","kind":"air","fw":"0.1.0","boot":7,"seq":1236,"phenomenon_time":"2026-09'
    '-21T14:15:20Z","t":1790000120.0,"clock_synced":true,"received_time":"2026-09-21T'
    '14:15:20.000Z","location":{"lat":13.0,"lon":100.0},"raw":{"pm25_cf1":{"v":35.0,"'
    'u":"ug/m3"},"pm25_atm":{"v":31.5,"u":"ug/m3"},"pm10_atm":{"v":45.5,"u":"ug/m3"},'
    '"temp":{"v":31.0,"u":"Cel"},"rh":{"v":60.0,"u":"%RH"}},"calibrated":{"pm25":{"v"'
    ':18.918,"u":"ug/m3","calibration_id":"fleet-pm25-epa-us-2021"},"pm10":{"v":35.75'
    ',"u":"ug/m3","calibration_id":"fleet-pm10-kohler-urban"},"temp":{"v":31.0,"u":"C'
    'el","calibration_id":"none"},"rh":{"v":60.0,"u":"%RH","calibration_id":"none"}},'
    '"quality":{"pm25":1,"pm10":1,"temp":1,"rh":1},"quality_tests":{"pm25":{"gross_ra'
    'nge":1,"spike":2,"rate_of_change":1,"flat_line":2},"pm10":{"gross_range":1,"spik'
    'e":2,"rate_of_change":1,"flat_line":2},"temp":{"gross_range":1,"spike":2,"rate_o'
    'f_change":1,"flat_line":2},"rh":{"gross_range":1,"spike":2,"rate_of_change":1,"f'
    'lat_line":2}},"derived":{"thai_aqi":{"value":35,"level":2,"name_en":"Good","name'
    '_th":"ดี","colour":"green","colour_hex":"#92D050","advice_en":"Air quality is go'
    'od; outdoor activities and travel as normal.","advice_th":"คุณภาพอากาศดี สามารถท'
    'ำกิจกรรมกลางแจ้งและการท่องเที่ยวได้ตามปกติ","pm25_24h":18.9,"completeness_24h":0'
    '.002},"us_aqi":{"value":69,"category":"Moderate","colour":"yellow"}},"replay":fa'
    "lse}"
).encode()
