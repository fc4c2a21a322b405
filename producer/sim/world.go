package sim

// specialty is one NHS treatment function with its share of outpatient volume, its clinics
// and its effect on the ground-truth DNA log-odds.
type specialty struct {
	code    string
	name    string
	weight  float64 // relative share of adult outpatient bookings
	effect  float64 // added to the DNA log-odds
	clinics []string
}

// specialties are weighted roughly as in NHS England outpatient activity (HES), where
// ophthalmology and trauma & orthopaedics lead. Paediatrics (420) only sees children and
// has weight 0 here; childSpecialty picks specialties for 0-17 year olds.
var specialties = []specialty{
	{"100", "General Surgery", 6, 0, []string{"General Surgery Clinic", "Colorectal Clinic", "Breast Clinic"}},
	{"101", "Urology", 5, -0.05, []string{"Urology Clinic", "Prostate Clinic"}},
	{"110", "Trauma & Orthopaedics", 12, 0, []string{"Fracture Clinic", "Knee Clinic", "Hip Clinic", "Spinal Clinic"}},
	{"120", "ENT", 6, 0.05, []string{"ENT Clinic", "Audiology-led ENT Clinic"}},
	{"130", "Ophthalmology", 14, -0.10, []string{"Glaucoma Clinic", "Cataract Clinic", "Medical Retina Clinic"}},
	{"300", "General Internal Medicine", 3, 0.10, []string{"General Medicine Clinic"}},
	{"301", "Gastroenterology", 4, 0.10, []string{"Gastroenterology Clinic", "IBD Clinic"}},
	{"320", "Cardiology", 7, -0.15, []string{"Cardiology Clinic", "Heart Failure Clinic", "Arrhythmia Clinic"}},
	{"330", "Dermatology", 7, 0.10, []string{"Dermatology Clinic", "Skin Cancer Clinic"}},
	{"340", "Respiratory Medicine", 4, 0.15, []string{"Respiratory Clinic", "Asthma Clinic"}},
	{"400", "Neurology", 3, 0.05, []string{"Neurology Clinic", "Epilepsy Clinic"}},
	{"410", "Rheumatology", 3, -0.05, []string{"Rheumatology Clinic"}},
	{"420", "Paediatrics", 0, 0.20, []string{"Paediatric Clinic", "Paediatric Asthma Clinic"}},
	{"502", "Gynaecology", 6, 0.15, []string{"Gynaecology Clinic", "Menopause Clinic"}},
	{"710", "Adult Mental Illness", 3, 0.60, []string{"Community Mental Health Clinic", "Psychiatry Outpatients"}},
	{"800", "Clinical Oncology", 5, -0.60, []string{"Oncology Clinic", "Radiotherapy Review Clinic"}},
}

var (
	adultSpecialtyCum = cumulative(weights(specialties, func(s specialty) float64 { return s.weight }))
	// Children are seen mostly in paediatrics, otherwise in ENT, ophthalmology, T&O and
	// dermatology.
	childSpecialtyCum = cumulative(weights(specialties, func(s specialty) float64 {
		switch s.code {
		case "420":
			return 60
		case "120", "130":
			return 12
		case "110":
			return 10
		case "330":
			return 6
		}
		return 0
	}))
)

// ageBandWeights is the share of outpatients per events.AgeBands entry: older people use
// outpatient services most.
var ageBandCum = cumulative([]float64{10, 6, 10, 11, 13, 15, 15, 14, 6})

func weights(ss []specialty, f func(specialty) float64) []float64 {
	w := make([]float64, len(ss))
	for i, s := range ss {
		w[i] = f(s)
	}
	return w
}
